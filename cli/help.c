/*
 * cli/help.c: what `outboxd help [COMMAND]`, `COMMAND --help` and the
 * outboxd(8) page say, from one table, so the page and the usage cannot
 * disagree. Texts are the Markdown subset of roff.c.
 */
#include "help.h"
#include "roff.h"
#include "../common/util.h"

#include <stdio.h>
#include <string.h>

#define MAX_OPTS 8

typedef struct {
    const char *flag, *text;
} help_opt_t;

typedef struct {
    const char *name;           /* "" is the daemon itself */
    const char *synopsis[2];
    const char *about;
    help_opt_t  opts[MAX_OPTS];
} help_cmd_t;

static const help_opt_t config_opt = { "-c FILE", "the config file (default `outboxd.conf`)" };

static const help_cmd_t cmds[] = {
    { "",
      { "outboxd [-c FILE] [-t] [-f] [--http-workers N] [--relays N] [--consumers N]" },
      "Starts the supervisor, which forks the HTTP workers, the relays and the ledger consumers "
      "and restarts any that dies. `SIGHUP` reloads the file, `SIGUSR1` reopens the log file, "
      "`SIGTERM` or `SIGINT` stop it. Flags override `[workers]` at start; a reload keeps a flag's "
      "value until the file's own value for that key changes.",
      { config_opt,
        { "-t", "validate the config, flags included, print what each Kafka client will be given "
                "(secrets as `***`), and exit: 0 valid, 1 not" },
        { "-f", "stay in the foreground (systemd's `Type=notify`)" },
        { "--http-workers N", "HTTP workers, 0 to 256" },
        { "--relays N", "relay workers, 0 to 256" },
        { "--consumers N", "ledger consumers, 0 to 256" },
        { "--version", "print the version and the versions of librdkafka, libpq and civetweb" },
        { "--help", "print this usage" } } },
    { "status",
      { "outboxd status [-c FILE] [--json]" },
      "Prints the running instance's workers, restarts, heartbeats, partition owners, breakers and "
      "slots from its shared-memory segment, found by `[supervisor] name`. It reads nothing else, so "
      "it answers while PostgreSQL and Kafka are down, and it runs on a file that no longer parses. "
      "Exit 1 when no instance runs. The segment is mode 0600: run it as the service's user.",
      { config_opt, { "--json", "print JSON instead of text" } } },
    { "migrate",
      { "outboxd migrate [-c FILE] [--orders-dsn OWNER_DSN] [--ledger-dsn OWNER_DSN]" },
      "Applies the missing migrations compiled into this binary: the schema `outboxd`, and the "
      "built-in orders and ledger tables where they are used, each in one transaction; running it "
      "twice changes nothing. Then checks what the roles of the configured DSNs lack. Run it "
      "before a new version starts: outboxd refuses to start against an older schema.",
      { config_opt, { "--orders-dsn OWNER_DSN", "migrate the orders database as this role (its owner)" },
        { "--ledger-dsn OWNER_DSN", "migrate the ledger database as this role" } } },
    { "reconcile",
      { "outboxd reconcile [-c FILE] [--json] [--grace SECONDS]" },
      "Compares the orders database with the ledger: missing, phantom and duplicate entries and "
      "totals. Exit 0 consistent, 1 findings, 2 could not finish.",
      { config_opt, { "--json", "print JSON" },
        { "--grace SECONDS", "ignore orders younger than this, still in flight (default 10)" } } },
    { "replay",
      { "outboxd replay [-c FILE] (--order ID | --event ID | --since TIMESTAMP | --quarantined) [--dry-run]",
        "outboxd replay [-c FILE] --dead-letters (--id N | --all) [--dry-run]" },
      "Sends events again (consumers apply each once), releases quarantined aggregates, or "
      "re-applies dead letters through the consumer's apply path once their cause is fixed. Exit 0 "
      "done, 1 not.",
      { config_opt, { "--order ID", "every event of one order" }, { "--event ID", "one event" },
        { "--since TIMESTAMP", "every event created since then" },
        { "--quarantined", "the quarantined aggregates' events" },
        { "--dead-letters", "dead letters, with --id N or --all" },
        { "--dry-run", "say what would be done, change nothing" } } },
    { "config-reference",
      { "outboxd config-reference" },
      "Prints every config key, its type, default and reload rule, as Markdown (docs/CONFIG.md).",
      { { NULL, NULL } } },
    { "manpage",
      { "outboxd manpage (8 | 5)" },
      "Prints the roff source of outboxd(8) or outboxd.conf(5).",
      { { NULL, NULL } } },
    { "help",
      { "outboxd help [COMMAND]" },
      "Prints the usage of every command, or of one; `COMMAND --help` does the same.",
      { { NULL, NULL } } },
};

static const help_cmd_t *
help_find(const char *name)
{
    for (size_t i = 0; i < OB_ARRAY_LEN(cmds); i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

/* Whether s[i] is markup: a backtick, or a star outside a code span (`***` is text). */
static int
markup(const char *s, size_t i, int *code)
{
    if (s[i] == '`') {
        *code = !*code;
        return 1;
    }
    return s[i] == '*' && !*code;
}

/* Markdown markup read as plain text: the markup goes, code spans stay as they are. */
static void
plain(FILE *out, const char *s)
{
    int code = 0;

    for (size_t i = 0; s[i] != '\0'; i++)
        if (!markup(s, i, &code))
            fputc(s[i], out);
}

/* Words filled to 76 columns under an indent, for the terminal. */
static void
filled(FILE *out, const char *indent, const char *s)
{
    size_t col = 0;
    int    code = 0;

    while (*s != '\0') {
        size_t n = strcspn(s, " ");
        if (col > 0 && col + 1 + n > 76) {
            fputc('\n', out);
            col = 0;
        }
        fputs(col == 0 ? indent : " ", out);
        col += col == 0 ? strlen(indent) : 1;
        for (size_t i = 0; i < n; i++)
            if (!markup(s, i, &code))
                fputc(s[i], out), col++;
        s += n;
        s += strspn(s, " ");
    }
    fputc('\n', out);
}

static void
usage_one(FILE *out, const help_cmd_t *c)
{
    for (int i = 0; i < 2 && c->synopsis[i] != NULL; i++)
        fprintf(out, "%s %s\n", i ? "      " : "usage:", c->synopsis[i]);
    filled(out, "  ", c->about);
    for (int i = 0; i < MAX_OPTS && c->opts[i].flag != NULL; i++) {
        fprintf(out, "  %-24s ", c->opts[i].flag);
        plain(out, c->opts[i].text);
        fputc('\n', out);
    }
}

void
ob_help_usage(FILE *out)
{
    for (size_t i = 0; i < OB_ARRAY_LEN(cmds); i++)
        for (int j = 0; j < 2 && cmds[i].synopsis[j] != NULL; j++)
            fprintf(out, "%s %s\n", i + j == 0 ? "usage:" : "      ", cmds[i].synopsis[j]);
    fputs("outboxd help COMMAND, or outboxd COMMAND --help, says more. The daemon:\n", out);
    filled(out, "  ", cmds[0].about);
    for (int i = 0; i < MAX_OPTS && cmds[0].opts[i].flag != NULL; i++) {
        fprintf(out, "  %-24s ", cmds[0].opts[i].flag);
        plain(out, cmds[0].opts[i].text);
        fputc('\n', out);
    }
}

int
ob_help_command(FILE *out, const char *name)
{
    const help_cmd_t *c = help_find(name);

    if (c == NULL)
        return -1;
    usage_one(out, c);
    return 0;
}

static void
man_command(FILE *out, const help_cmd_t *c)
{
    if (c->name[0] != '\0') {
        fputs(".SS \"", out);
        ob_roff_inline(out, c->name, strlen(c->name));
        fputs("\"\n", out);
    }
    for (int i = 0; i < 2 && c->synopsis[i] != NULL; i++) {
        fputs(".PP\n\\fB", out);
        ob_roff_inline(out, c->synopsis[i], strlen(c->synopsis[i]));
        fputs("\\fR\n", out);
    }
    fputs(".PP\n", out);
    ob_roff_markdown(out, c->about);
    fputc('\n', out);
    for (int i = 0; i < MAX_OPTS && c->opts[i].flag != NULL; i++) {
        fputs(".TP\n\\fB", out);
        ob_roff_inline(out, c->opts[i].flag, strlen(c->opts[i].flag));
        fputs("\\fR\n", out);
        ob_roff_markdown(out, c->opts[i].text);
        fputc('\n', out);
    }
}

int
ob_help_manpage8(FILE *out, const char *version)
{
    ob_roff_header(out, "outboxd", 8, version, "transactional outbox relay and ledger consumer");
    fputs(".SH SYNOPSIS\n", out);
    for (size_t i = 0; i < OB_ARRAY_LEN(cmds); i++)
        for (int j = 0; j < 2 && cmds[i].synopsis[j] != NULL; j++) {
            fputs(".br\n\\fB", out);
            ob_roff_inline(out, cmds[i].synopsis[j], strlen(cmds[i].synopsis[j]));
            fputs("\\fR\n", out);
        }
    fputs(".SH DESCRIPTION\n", out);
    ob_roff_markdown(out,
                     "outboxd publishes the events that services write into their own database's outbox, "
                     "in the same transaction as their data, to Kafka, and applies them to a ledger: no event "
                     "lost, none booked twice, the events of one aggregate in order. One binary runs the "
                     "supervisor and its workers; its subcommands are the operator's tools.\n");
    fputs(".SH COMMANDS\n", out);
    for (size_t i = 0; i < OB_ARRAY_LEN(cmds); i++)
        man_command(out, &cmds[i]);
    ob_roff_markdown(out,
                     "## SIGNALS\n"
                     "`SIGHUP` reloads the config file; a file that does not parse or validate changes nothing.\n"
                     "`SIGUSR1` reopens `[log] file` (log rotation). `SIGTERM` and `SIGINT` drain and stop.\n"
                     "## EXIT STATUS\n"
                     "0 on success; 2 on a usage or config error, with a sentence on stderr; 1 where a command "
                     "says so above.\n"
                     "## FILES\n"
                     "`/etc/outboxd/outboxd.conf`, the packaged config (mode 0640, root:outboxd: it holds DSNs). "
                     "`/dev/shm/outboxd-NAME`, the status segment of the instance named NAME.\n"
                     "## SEE ALSO\n"
                     "outboxd.conf(5), and `/usr/share/outboxd/docs` for the design and the alert rules.\n");
    return ferror(out) ? 1 : 0;
}
