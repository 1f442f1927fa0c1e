/* scaffold.c — `herald new NAME`: writes a bot project (bot.lua, a passing spec, .busted,
 * .luarc.json, env/.env.local) from the embedded templates, with the paths of this herald's kit. */
#include "scaffold.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

static int is_file(const char *dir, const char *rel)
{
    char path[PATH_MAX];
    struct stat st;
    if (snprintf(path, sizeof path, "%s/%s", dir, rel) >= (int)sizeof path)
        return 0;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* realpath of dir/rel, or NULL. */
static char *resolve(const char *dir, const char *rel)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, rel) >= (int)sizeof path)
        return NULL;
    return realpath(path, NULL);
}

void scaffold_paths_free(scaffold_paths *p)
{
    free(p->lua_dir);
    free(p->so_dir);
    free(p->defs_dir);
    memset(p, 0, sizeof *p);
}

/* The build tree is searched from the binary's directory upwards (build/herald, build/asan/herald);
 * an install has bin/herald beside share/herald and lib/herald (make install). */
int scaffold_find_paths(const char *exe, scaffold_paths *p, char **err)
{
    memset(p, 0, sizeof *p);
    char *real = realpath(exe, NULL);
    char *slash = real ? strrchr(real, '/') : NULL;
    if (!slash) {
        *err = errf("cannot find the herald binary's directory (%s)", exe);
        free(real);
        return -1;
    }
    *slash = 0;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", real);
    for (int up = 0; up < 3; up++) {
        if (is_file(dir, "lua/teams/testing.lua") && is_file(dir, "build/lua/herald/testing_core.so") &&
            is_file(dir, "lua/defs/teams/init.lua")) {
            p->lua_dir = resolve(dir, "lua");
            p->so_dir = resolve(dir, "build/lua");
            p->defs_dir = resolve(dir, "lua/defs");
            break;
        }
        if (strlen(dir) + 4 >= sizeof dir)
            break;
        strcat(dir, "/..");
    }
    if (!p->lua_dir && is_file(real, "../share/herald/lua/teams/testing.lua") &&
        is_file(real, "../lib/herald/lua/herald/testing_core.so") &&
        is_file(real, "../share/herald/lua/defs/teams/init.lua")) {
        p->lua_dir = resolve(real, "../share/herald/lua");
        p->so_dir = resolve(real, "../lib/herald/lua");
        p->defs_dir = resolve(real, "../share/herald/lua/defs");
    }
    if (!p->lua_dir || !p->so_dir || !p->defs_dir) {
        *err = errf("cannot find herald's test kit beside %s/herald: build it with `make` (the build "
                       "tree's lua/ and build/lua/) or install it with `make install` "
                       "(share/herald/lua and lib/herald/lua)", real);
        free(real);
        scaffold_paths_free(p);
        return -1;
    }
    free(real);
    return 0;
}

/* A path goes into a Lua and a JSON string literal as it is: refuse what would need escaping. */
static int plain_path(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '"' || *s == '\\')
            return 0;
    return 1;
}

/* text with every {{KEY}} replaced (keys/values in pairs, NULL-terminated); malloc'd. */
static char *expand(const char *text, size_t len, const char *const *subst)
{
    size_t cap = len + 1, n = 0;
    for (const char *const *s = subst; *s; s += 2)
        cap += 8 * strlen(s[1]);   /* a template names each key a few times at most */
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len;) {
        const char *const *hit = NULL;
        if (text[i] == '{' && i + 1 < len && text[i + 1] == '{') {
            for (const char *const *s = subst; *s; s += 2) {
                size_t k = strlen(s[0]);
                if (i + 2 + k + 2 <= len && memcmp(text + i + 2, s[0], k) == 0 &&
                    memcmp(text + i + 2 + k, "}}", 2) == 0) {
                    hit = s;
                    break;
                }
            }
        }
        if (hit) {
            size_t vl = strlen(hit[1]);
            if (n + vl + 1 > cap) {
                char *bigger = realloc(out, cap = (n + vl + 1) * 2);
                if (!bigger) {
                    free(out);
                    return NULL;
                }
                out = bigger;
            }
            memcpy(out + n, hit[1], vl);
            n += vl;
            i += 2 + strlen(hit[0]) + 2;
        } else {
            if (n + 2 > cap) {
                char *bigger = realloc(out, cap *= 2);
                if (!bigger) {
                    free(out);
                    return NULL;
                }
                out = bigger;
            }
            out[n++] = text[i++];
        }
    }
    out[n] = 0;
    return out;
}

/* mkdir -p for the directories of rel under root. */
static int make_parents(const char *root, const char *rel)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", root, rel) >= (int)sizeof path)
        return -1;
    for (char *s = path + strlen(root) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return 0;
}

static int write_file(const char *root, const char *rel, const char *text, char **err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    if (make_parents(root, rel) < 0) {
        *err = errf("cannot create the directories of %s: %s", path, strerror(errno));
        return -1;
    }
    /* O_EXCL: never overwrite, even a file that appeared since the emptiness check */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        *err = errf("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            *err = errf("cannot write %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (close(fd) < 0) {
        *err = errf("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* 1 when dir exists and holds nothing, 0 when it does not exist, -1 otherwise (*err says why). */
static int existing_empty(const char *dir, char **err)
{
    struct stat st;
    if (stat(dir, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        *err = errf("cannot use %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        *err = errf("%s exists and is not a directory: not overwriting it", dir);
        return -1;
    }
    DIR *d = opendir(dir);
    if (!d) {
        *err = errf("cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = 0;
    closedir(d);
    if (!empty) {
        *err = errf("%s exists and is not empty: not overwriting it (pick a new name, or empty it)",
                       dir);
        return -1;
    }
    return 1;
}

int scaffold_new(const char *name, const scaffold_file *files, const scaffold_paths *p, char **err)
{
    size_t nl = strlen(name);
    while (nl > 1 && name[nl - 1] == '/')
        nl--;
    char *dir = strndup(name, nl);
    if (!dir) {
        *err = errf("out of memory");
        return -1;
    }
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    int rc = -1;
    if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 ||
        strspn(base, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != strlen(base)) {
        *err = errf("herald new: the project's name (the directory's last part) may hold letters, "
                       "digits, '_', '-' and '.', got '%s'", base);
        goto out;
    }
    if (!plain_path(p->lua_dir) || !plain_path(p->so_dir) || !plain_path(p->defs_dir)) {
        *err = errf("herald's directory %s holds a quote, a backslash or a control character; "
                       "the project's .busted could not name it", p->lua_dir);
        goto out;
    }
    int exists = existing_empty(dir, err);
    if (exists < 0)
        goto out;
    if (!exists && mkdir(dir, 0755) < 0) {
        *err = errf("cannot create %s: %s", dir, strerror(errno));
        goto out;
    }
    const char *const subst[] = {"NAME", base, "LUA_DIR", p->lua_dir, "SO_DIR", p->so_dir,
                                 "DEFS_DIR", p->defs_dir, NULL};
    for (const scaffold_file *f = files; f->path; f++) {
        char *text = expand(f->text, f->len, subst);
        if (!text) {
            *err = errf("out of memory");
            goto out;
        }
        int w = write_file(dir, f->path, text, err);
        free(text);
        if (w < 0)
            goto out;
    }
    rc = 0;
out:
    free(dir);
    return rc;
}
