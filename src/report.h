/* report.h — operator reports over the database: `herald outbox`, `blocked`, `deliveries`. */
#ifndef HERALD_REPORT_H
#define HERALD_REPORT_H

struct config;

/* Prints the report cfg->command names in cfg->format; returns the process exit code. */
int report_run(const struct config *cfg);

#endif
