// tests/e2e/playground.test.cjs — herald end to end against the REAL Microsoft 365 Agents Playground,
// driven without a browser (the routes its web page uses; see shared PLAYGROUND.md §5).
//
// Starts herald (--dev, --listen 127.0.0.1:0) with tests/e2e/bot.lua and the playground (bound to
// 127.0.0.1 by scripts/loopback-preload.cjs) on a free port, then plays the user's side: install in
// the personal chat, "hello", "proactive", install in the team, a channel message mentioning the
// bot. It reads what the chat shows from the playground's WebSocket and asserts on it.
//
// Run through tests/e2e/run.sh (skips cleanly without node/playground). Env: HERALD_BIN (default
// build/asan/herald if present, else build/herald), E2E_VERBOSE=1 (print every chat frame).
// Prints one line per case and a final "N passed, N failed"; exit status 1 on any failure.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');
const { connect } = require('./ws-client.cjs');

const ROOT = path.resolve(__dirname, '..', '..');
const PG_CLI = path.join(ROOT, 'node_modules', '@microsoft', 'm365agentsplayground', 'cli.js');
const PRELOAD = path.join(ROOT, 'scripts', 'loopback-preload.cjs');
const BOT = path.join(__dirname, 'bot.lua');
const VERBOSE = process.env.E2E_VERBOSE === '1';
// HERALD_TEST_TIME_FACTOR: the tests' one allowance for slow machines (tests/integration/harness.py)
const TF = Number(process.env.HERALD_TEST_TIME_FACTOR) > 0 ? Number(process.env.HERALD_TEST_TIME_FACTOR) : 1;
const BUDGET_MS = 55000 * TF;     // the whole run; tests/e2e/run.sh adds a hard limit on top
const STEP_MS = 10000 * TF;       // one expected chat frame
const LISTEN_RE = /listening on http:\/\/([0-9.]+|\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d+)/;
const SANITIZER_MARKERS = ['ERROR: AddressSanitizer', 'runtime error:', 'LeakSanitizer'];
const SCRUB = ['CLIENT_ID', 'CLIENT_SECRET', 'TENANT_ID', 'MicrosoftAppId', 'MicrosoftAppPassword',
  'MicrosoftAppTenantId', 'MicrosoftAppType', 'HERALD_DEV', 'HERALD_LISTEN', 'HERALD_DB',
  'HERALD_LOG_LEVEL', 'HERALD_MAX_BODY_BYTES', 'HERALD_RESPONSE_DEADLINE_MS',
  'HERALD_REDELIVERY_WINDOW_S', 'HERALD_SHUTDOWN_GRACE_MS', 'HERALD_CONNECTOR_TIMEOUT_MS'];

function heraldBin() {
  if (process.env.HERALD_BIN) return path.resolve(ROOT, process.env.HERALD_BIN);
  const asan = path.join(ROOT, 'build', 'asan', 'herald');
  return fs.existsSync(asan) ? asan : path.join(ROOT, 'build', 'herald');
}

const T0 = Date.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const elapsed = () => ((Date.now() - T0) / 1000).toFixed(1) + 's';

// ------------------------------------------------------------------ results
const results = [];
function pass(name, detail) {
  results.push({ name, ok: true });
  console.log(`PASS ${name}${detail ? ` (${detail})` : ''}`);
}
function fail(name, err) {
  results.push({ name, ok: false });
  console.log(`FAIL ${name}: ${err && err.message ? err.message : err}`);
}
async function testCase(name, fn) {
  if (Date.now() - T0 > BUDGET_MS) return fail(name, 'time budget exhausted');
  try {
    const detail = await fn();
    pass(name, detail);
    return true;
  } catch (e) {
    fail(name, e);
    return false;
  }
}
function check(cond, msg) { if (!cond) throw new Error(msg); }

// ------------------------------------------------------------------ HTTP
function request(method, port, p, body, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const req = http.request({
      host: '127.0.0.1', port, path: p, method, timeout: timeoutMs,
      headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode, text, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${p}: timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function rawExchange(port, text, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => { sock.destroy(); resolve(buf); }, timeoutMs);
    sock.on('connect', () => sock.write(text));
    sock.on('data', (d) => { buf += d.toString('latin1'); });
    sock.on('end', () => { clearTimeout(timer); sock.destroy(); resolve(buf); });
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

// Local addresses of LISTEN sockets on a port, from /proc/net/tcp{,6}; null where unreadable.
function listenAddrs(port) {
  const out = [];
  let readAny = false;
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try { text = fs.readFileSync(f, 'utf8'); readAny = true; } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== '0A') continue;
      const [hex, p] = cols[1].split(':');
      if (parseInt(p, 16) !== port) continue;
      if (hex.length === 8) {
        out.push([3, 2, 1, 0].map((i) => parseInt(hex.substr(i * 2, 2), 16)).join('.'));
      } else {
        out.push(hex === '00000000000000000000000000000000' ? '::' : `[${hex}]`);
      }
    }
  }
  return readAny ? out : null;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// ------------------------------------------------------------------ processes
const procs = [];
function startProc(name, cmd, args, opts, logFile) {
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
  const p = { name, child, out: '', err: '', exited: null, logFile };
  const log = fs.createWriteStream(logFile);
  child.stdout.on('data', (d) => { p.out += d; log.write(d); });
  child.stderr.on('data', (d) => { p.err += d; log.write(d); });
  p.exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => { p.exited = { code, signal }; resolve(p.exited); });
    child.on('error', (e) => { p.exited = { code: null, signal: null, error: e }; p.err += `spawn error: ${e.message}\n`; resolve(p.exited); });
  });
  procs.push(p);
  return p;
}
async function waitFor(pred, timeoutMs, what, p) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = pred();
    if (v) return v;
    if (p && p.exited) throw new Error(`${p.name} exited (${JSON.stringify(p.exited)}) while waiting for ${what}`);
    if (Date.now() > end) throw new Error(`timeout after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}
async function stopProc(p, graceMs) {
  if (!p || p.exited) return p && p.exited;
  try { p.child.kill('SIGTERM'); } catch { /* gone */ }
  const r = await Promise.race([p.exitPromise, sleep(graceMs).then(() => null)]);
  if (r) return r;
  try { p.child.kill('SIGKILL'); } catch { /* gone */ }
  await Promise.race([p.exitPromise, sleep(2000)]);
  return { code: null, signal: 'SIGKILL', killed: true };
}
function killAllNow() {
  for (const p of procs) if (!p.exited) { try { p.child.kill('SIGKILL'); } catch { /* gone */ } }
}
process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { killAllNow(); process.exit(130); });
}

function tail(text, n = 40) {
  const lines = String(text).split('\n');
  return lines.slice(Math.max(0, lines.length - n)).join('\n');
}

// ------------------------------------------------------------------ chat stream
class Chat {
  constructor() { this.frames = []; }
  attach(ws) {
    ws.on('message', (m) => {
      let f;
      try { f = JSON.parse(m); } catch { return; }
      f._at = Date.now();
      this.frames.push(f);
      if (VERBOSE) console.log(`  [${elapsed()}] ws ${m}`);
    });
  }
  find(pred, from = 0) {
    for (let i = from; i < this.frames.length; i++) if (pred(this.frames[i])) return this.frames[i];
    return null;
  }
  async expect(pred, what, timeoutMs = STEP_MS) {
    try {
      return await waitFor(() => this.find(pred), timeoutMs, what);
    } catch (e) {
      const seen = this.frames.map((f) => `${f.action} ${f.actionConversationId} ${JSON.stringify(f.message && f.message.text)}`);
      throw new Error(`${e.message}; chat frames so far: ${seen.length ? seen.join(' | ') : '(none)'}`);
    }
  }
}
const created = (conv, textPred) => (f) => f.action === 'createMessage' && f.actionConversationId === conv &&
  f.message && textPred(String(f.message.text || ''));

// ------------------------------------------------------------------ main
async function main() {
  const HERALD = heraldBin();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-e2e-'));
  console.log(`e2e: herald=${path.relative(ROOT, HERALD) || HERALD} node=${process.version} tmp=${tmp}`);

  let herald = null;
  let pg = null;
  let ws = null;
  let logWs = null;
  const pgLog = [];
  let heraldPort = 0;
  let pgPort = 0;
  let cfg = null;
  const chat = new Chat();

  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!SCRUB.includes(k)) env[k] = v;
  env.ASAN_OPTIONS = env.ASAN_OPTIONS || 'detect_leaks=1:abort_on_error=0';
  env.UBSAN_OPTIONS = env.UBSAN_OPTIONS || 'print_stacktrace=1:halt_on_error=1';
  env.HERALD_SHUTDOWN_GRACE_MS = '3000';

  try {
    // 1. herald
    if (!await testCase('herald starts in dev mode on 127.0.0.1:0 and answers /healthz', async () => {
      herald = startProc('herald', HERALD,
        ['run', '--dev', '--listen', '127.0.0.1:0', '--db', path.join(tmp, 'e2e.db'), BOT],
        { cwd: tmp, env }, path.join(tmp, 'herald.log'));
      const m = await waitFor(() => LISTEN_RE.exec(herald.err), 10000, '"listening on http://HOST:PORT" in herald\'s log', herald);
      heraldPort = Number(m[2]);
      check(m[1] === '127.0.0.1', `herald listens on ${m[1]}, wanted 127.0.0.1`);
      check(heraldPort > 0, `bad port in "${m[0]}"`);
      const h = await request('GET', heraldPort, '/healthz');
      check(h.status === 200, `GET /healthz -> ${h.status} ${h.text}`);
      return `port ${heraldPort}`;
    })) return;

    // The playground waits for the bot with HEAD /api/messages (any status will do, but the reply
    // must be valid HTTP: a HEAD response carries no body, or node's parser rejects it and the
    // playground reports "Cannot connect to your app" after a 15 s wait).
    await testCase('HEAD /api/messages: a response without a body (playground readiness probe)', async () => {
      const raw = await rawExchange(heraldPort, 'HEAD /api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      const sep = raw.indexOf('\r\n\r\n');
      check(sep >= 0 && /^HTTP\/1\.[01] \d{3} /.test(raw), `not an HTTP response: ${JSON.stringify(raw.slice(0, 120))}`);
      const body = raw.slice(sep + 4);
      check(body.length === 0, `${raw.slice(0, raw.indexOf('\r\n'))} followed by a ${body.length}-byte body: ${JSON.stringify(body.slice(0, 80))}`);
      return raw.slice(0, raw.indexOf('\r\n'));
    });

    // 2. the playground
    if (!await testCase('Agents Playground starts on 127.0.0.1 (loopback preload)', async () => {
      pgPort = await freePort();
      const pgEnv = { ...env, TEAMSAPPTESTER_BROWSER: 'none', M365_AGENTS_PLAYGROUND_LOGFILE: path.join(tmp, 'playground.log') };
      pg = startProc('playground', process.execPath, [
        '-r', PRELOAD, PG_CLI, 'start',
        '-e', `http://127.0.0.1:${heraldPort}/api/messages`, '-c', 'msteams', '--dt',
        '-p', String(pgPort), '--su', `http://127.0.0.1:${pgPort}/_connector`,
      ], { cwd: tmp, env: pgEnv }, path.join(tmp, 'playground.stdout'));
      const m = await waitFor(() => /Listening on (\d+)/.exec(pg.out), 20000, '"Listening on PORT" from the playground', pg);
      check(Number(m[1]) === pgPort, `playground took port ${m[1]}, not ${pgPort} (port was busy?)`);
      const ping = await request('GET', pgPort, '/_debug/ping');
      check(ping.status === 200 && ping.text === 'pong', `GET /_debug/ping -> ${ping.status} ${ping.text}`);
      const addrs = listenAddrs(pgPort);
      if (addrs !== null) {
        check(addrs.length > 0 && addrs.every((a) => a === '127.0.0.1'), `playground listens on ${addrs.join(', ') || 'nothing?'}, not only 127.0.0.1`);
      }
      return `port ${pgPort}, listening on ${addrs ? addrs.join(',') : '(no /proc/net/tcp)'}`;
    })) return;

    ws = await connect(`http://127.0.0.1:${pgPort}/_ws_conversation/v1/conversations/stream`);
    chat.attach(ws);
    // The log panel's stream: every exchange with the bot and every connector call, with statuses.
    logWs = await connect(`http://127.0.0.1:${pgPort}/_ws/log/stream`);
    logWs.on('message', (m) => {
      try { const f = JSON.parse(m); if (f && f.log) pgLog.push(f.log); } catch { /* ignore */ }
    });

    // 3. config (the playground first checks the bot endpoint with HEAD /api/messages)
    if (!await testCase('GET /_internal/v1/config (playground reaches herald)', async () => {
      const r = await request('GET', pgPort, '/_internal/v1/config');
      check(r.status === 200 && r.json && r.json.config, `-> ${r.status} ${r.text.slice(0, 200)}`);
      cfg = r.json.config;
      check(cfg.personalChat && cfg.personalChat.id, 'no personalChat.id in config');
      check(cfg.bot && cfg.bot.id, 'no bot.id in config');
      const fileLog = readIf(path.join(tmp, 'playground.log'));
      check(!/Cannot connect to your app/i.test(fileLog), 'playground logged "Cannot connect to your app"');
      return `personal chat ${cfg.personalChat.id}`;
    })) return;

    const pc = cfg.personalChat.id;
    const user = (cfg.currentUser && cfg.currentUser.id) || 'user-id-0';
    const say = (conv, text, extra) => request('POST', pgPort, `/_conversation/v1/conversations/${encodeURIComponent(conv)}/messages`,
      { from: { id: user }, text, textFormat: 'plain', ...extra });
    let lastInstallAt = 0;

    await testCase('personal install -> welcome message', async () => {
      const r = await request('POST', pgPort, `/_debug/conversation/${encodeURIComponent(pc)}/installation`, {});
      check(r.status === 200, `POST installation -> ${r.status} ${r.text}`);
      lastInstallAt = Date.now();
      const f = await chat.expect(created(pc, (t) => t.startsWith('welcome')), 'a welcome createMessage in the personal chat');
      return JSON.stringify(f.message.text);
    });

    await testCase('personal message "hello" -> "echo: hello"', async () => {
      const r = await say(pc, 'hello');
      check(r.status === 200, `POST message -> ${r.status} ${r.text}`);
      await chat.expect(created(pc, (t) => t === 'echo: hello'), '"echo: hello" in the personal chat');
    });

    await testCase('"proactive" -> teams.send "proactive 1", then teams.update "(edited)" in place', async () => {
      const from = chat.frames.length;
      const r = await say(pc, 'proactive');
      check(r.status === 200, `POST message -> ${r.status} ${r.text}`);
      const c = await chat.expect((f) => chat.frames.indexOf(f) >= from && created(pc, (t) => t === 'proactive 1')(f),
        'createMessage "proactive 1"');
      const id = c.message.messageId;
      const u = await chat.expect((f) => f.action === 'updateMessage' && f.actionConversationId === pc &&
        f.message && f.message.messageId === id, `updateMessage for messageId ${id}`);
      check(u.message.text === 'proactive 1 (edited)', `updated text is ${JSON.stringify(u.message.text)}`);
      const gap = u._at - c._at;
      return `messageId ${id}, updated after ${gap} ms`;
    });

    await testCase('team install (team-id) -> welcome in the channel', async () => {
      const r = await request('POST', pgPort, '/_debug/conversation/team-id/installation', {});
      check(r.status === 200, `POST installation -> ${r.status} ${r.text}`);
      lastInstallAt = Date.now();
      const f = await chat.expect((x) => x.action === 'createMessage' && String(x.actionConversationId).startsWith('team-id') &&
        x.message && String(x.message.text || '').startsWith('welcome'), 'a welcome createMessage in team-id');
      return JSON.stringify(f.message.text);
    });

    await testCase('channel message mentioning the bot -> reply in the thread', async () => {
      const mention = `<at>${cfg.bot.name}</at>`;
      const r = await say('team-id', `${mention} hi channel`, {
        mentions: [{ mentioned: { id: cfg.bot.id, name: cfg.bot.name }, text: mention }],
      });
      check(r.status === 200 && r.json && r.json.postConversationId, `POST message -> ${r.status} ${r.text}`);
      const post = r.json.postConversationId;
      const f = await chat.expect((x) => x.action === 'createMessage' && x.actionConversationId === post,
        `a reply in thread ${post}`);
      check(f.message.text === 'echo: hi channel', `reply text is ${JSON.stringify(f.message.text)} (mention not removed?)`);
      return `thread ${post}`;
    });

    await testCase('each install welcomes exactly once (installationUpdate + conversationUpdate)', async () => {
      const wait = 1500 * TF - (Date.now() - lastInstallAt);   // no second welcome by now
      if (wait > 0) await sleep(wait);
      const count = (pred) => chat.frames.filter((f) => f.action === 'createMessage' && f.message &&
        String(f.message.text || '').startsWith('welcome') && pred(String(f.actionConversationId))).length;
      const nPersonal = count((c) => c === pc);
      const nTeam = count((c) => c.startsWith('team-id'));
      check(nPersonal === 1 && nTeam === 1, `welcomes: personal ${nPersonal}, team ${nTeam}`);
    });

    await testCase('herald answered every activity 200; its connector calls got 2xx', async () => {
      await sleep(200 * TF);
      const PG = 'Microsoft 365 Agents Playground';
      const inbound = pgLog.filter((l) => l.from === PG && l.response);
      const outbound = pgLog.filter((l) => l.to === PG && l.response);
      const notes = pgLog.filter((l) => l.type === 'text' && /cannot connect|error|fail/i.test(String(l.displayText)));
      check(notes.length === 0, `playground notes: ${notes.map((l) => l.displayText).join(' | ')}`);
      check(inbound.length >= 7, `only ${inbound.length} bot exchanges in the playground's log stream`);
      const badIn = inbound.filter((l) => l.response.statusCode !== 200)
        .map((l) => `${l.activityName}->${l.response.statusCode} ${JSON.stringify(l.response.body)}`);
      check(badIn.length === 0, `herald's answers: ${badIn.join(', ')}`);
      const badOut = outbound.filter((l) => !(l.response.statusCode >= 200 && l.response.statusCode < 300))
        .map((l) => `${l.activityName}->${l.response.statusCode} ${JSON.stringify(l.response.body)}`);
      check(badOut.length === 0, `connector answers to herald: ${badOut.join(', ')}`);
      return `${inbound.length} activities in, ${outbound.length} connector calls`;
    });
  } finally {
    // shutdown and process checks
    if (ws) ws.close();
    if (logWs) logWs.close();
    if (pg) await stopProc(pg, 3000);
    if (herald && heraldPort && !herald.exited) {
      await testCase('herald exits 0 on SIGTERM, no errors or sanitizer reports in its log', async () => {
        const r = await stopProc(herald, 8000);
        check(r && r.code === 0, `exit ${JSON.stringify(r)}`);
        const san = SANITIZER_MARKERS.filter((m) => herald.err.includes(m));
        check(san.length === 0, `sanitizer report: ${san.join(', ')}`);
        const errs = herald.err.split('\n').filter((l) => /^\S+\s+(error|fatal)\b/i.test(l));
        check(errs.length === 0, `error lines in herald's log:\n    ${errs.slice(0, 5).join('\n    ')}`);
      });
    } else if (herald) {
      await stopProc(herald, 3000);
    }
    const anyFail = results.some((r) => !r.ok);
    if (anyFail || VERBOSE) {
      if (herald) console.log(`--- herald log (tail, full: ${herald.logFile}) ---\n${tail(herald.err)}`);
      const pgl = path.join(tmp, 'playground.log');
      if (pg) console.log(`--- playground log (tail, full: ${pgl}) ---\n${tail(readIf(pgl), 30)}\n${tail(pg.err, 10)}`);
    } else {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
}

function readIf(p) { try { return fs.readFileSync(p, 'utf8'); } catch { return ''; } }

const hardStop = setTimeout(() => {
  console.log(`FAIL e2e: hard time limit (${BUDGET_MS + 3000} ms) reached`);
  results.push({ ok: false });
  finish();
}, BUDGET_MS + 3000);

function finish() {
  killAllNow();
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`e2e: ${elapsed()}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { fail('e2e driver', e); }).finally(() => { clearTimeout(hardStop); finish(); });
