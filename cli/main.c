/*
 * cli/main.c: command line of the one outboxd binary.
 *
 *   outboxd [-c FILE] [-t] [-f] [--http-workers N] [--relays N] [--consumers N]
 *   outboxd status  [-c FILE] [--json]
 *   outboxd migrate [-c FILE] [--orders-dsn OWNER_DSN] [--ledger-dsn OWNER_DSN]
 *   outboxd reconcile [-c FILE] [--json] [--grace SECONDS]
 *   outboxd replay [-c FILE] (--order ID | --event ID | --since TS | --quarantined
 *                             | --dead-letters (--id N | --all)) [--dry-run]
 *   outboxd config-reference | manpage (8|5) | help [COMMAND] | --version
 *
 * Bad usage exits 2 with a sentence; so does a config that does not parse.
 */
#include "../supervisor/sup.h"
#include "cmd.h"
#include "help.h"
#include "../common/cfg.h"
#include "../common/kprops.h"
#include "../common/pg.h"
#include "../common/util.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONFIG "outboxd.conf"

static void
usage(FILE *out)
{
    ob_help_usage(out);
}

static int
parse_count(const char *flag, const char *v, int *out)
{
    char *end;
    long  n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < 0 || n > 256) {
        fprintf(stderr, "outboxd: %s expects a whole number from 0 to 256, got \"%s\"\n", flag, v);
        return -1;
    }
    *out = (int) n;
    return 0;
}

/* A dead letter id: a whole number above 0. */
static int
parse_id(const char *v)
{
    char *end;
    long long n;

    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < 1) {
        fprintf(stderr, "outboxd: --id expects a dead letter id (a whole number above 0), got \"%s\"\n", v);
        return -1;
    }
    return 0;
}

/* What each Kafka client will be given, secrets as "***", so -t shows what runs. */
static void
print_kafka_props(const ob_cfg_t *cfg)
{
    char line[2048];

    ob_kprops_describe(cfg, OB_KPROP_PRODUCER, line, sizeof(line));
    if (line[0] != '\0')
        printf("outboxd: kafka producer properties: %s\n", line);
    ob_kprops_describe(cfg, OB_KPROP_CONSUMER, line, sizeof(line));
    if (line[0] != '\0')
        printf("outboxd: kafka consumer properties: %s\n", line);
}

static int
load_config(const char *path, ob_cfg_t *cfg)
{
    char err[1024];

    if (ob_cfg_load(cfg, path, err, sizeof(err)) != 0) {
        fprintf(stderr, "outboxd: %s\n", err);
        return -1;
    }
    return 0;
}

/* What a subcommand's options said. */
typedef struct {
    const char *name, *path, *what, *value, *dl_id, *owner[2];
    int         json, dry_run, picks, dl_picks, grace, help;
} cli_opts_t;

/* One option of a subcommand into o; 0, or -1 after saying why. */
static int
cli_option(int ch, cli_opts_t *o)
{
    if (ch == 'c')
        o->path = optarg;
    else if (ch == 'j')
        o->json = 1;
    else if (ch == 'n')
        o->dry_run = 1;
    else if (ch == 'O' || ch == 'L')
        o->owner[ch == 'L'] = optarg;     /* migrate as the schema's owner */
    else if (ch == 'g') {
        if (ob_cfg_parse_duration(optarg, &o->grace) != 0) {
            fprintf(stderr, "outboxd: --grace expects seconds (or 90s, 5m), got \"%s\"\n", optarg);
            return -1;
        }
    } else if (ch == 'o' || ch == 'e' || ch == 's' || ch == 'q' || ch == 'D') {
        o->what = ch == 'o' ? "order" : ch == 'e' ? "event" : ch == 's' ? "since" : ch == 'q' ? "quarantined"
                                                                                         : "dead-letters";
        o->value = ch == 'q' || ch == 'D' ? NULL : optarg;
        o->picks++;
    } else if (ch == 'i' || ch == 'a') {
        if (ch == 'i' && parse_id(optarg) != 0)
            return -1;
        o->dl_id = ch == 'i' ? optarg : NULL;
        o->dl_picks++;
    } else if (ch == 'h')
        o->help = 1;
    else {
        ob_help_command(stderr, o->name);
        return -1;
    }
    return 0;
}

static int
cli_parse(const char *name, int argc, char **argv, cli_opts_t *o)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, 'j' },       { "order", required_argument, NULL, 'o' },
        { "event", required_argument, NULL, 'e' }, { "since", required_argument, NULL, 's' },
        { "quarantined", no_argument, NULL, 'q' }, { "dry-run", no_argument, NULL, 'n' },
        { "grace", required_argument, NULL, 'g' },
        { "dead-letters", no_argument, NULL, 'D' }, { "id", required_argument, NULL, 'i' },
        { "all", no_argument, NULL, 'a' },         { "help", no_argument, NULL, 'h' },
        { "orders-dsn", required_argument, NULL, 'O' }, { "ledger-dsn", required_argument, NULL, 'L' },
        { NULL, 0, NULL, 0 },
    };
    int ch;

    *o = (cli_opts_t) { .name = name, .path = DEFAULT_CONFIG, .grace = 10 };
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:", opts, NULL)) != -1)
        if (cli_option(ch, o) != 0)
            return -1;
    return 0;
}

static int
cli_status(const ob_cfg_t *cfg, const cli_opts_t *o)
{
    return ob_cmd_status(cfg, o->json);
}

static int
cli_migrate(const ob_cfg_t *cfg, const cli_opts_t *o)
{
    return ob_cmd_migrate(cfg, o->owner[0], o->owner[1]);
}

static int
cli_reconcile(const ob_cfg_t *cfg, const cli_opts_t *o)
{
    return ob_cmd_reconcile(cfg, o->json, o->grace);
}

static int
cli_replay(const ob_cfg_t *cfg, const cli_opts_t *o)
{
    if (o->picks != 1) {
        fprintf(stderr, "outboxd: replay needs exactly one of --order, --event, --since, --quarantined, --dead-letters\n");
        return OB_EXIT_FATAL;
    }
    int dead = strcmp(o->what, "dead-letters") == 0;
    if (dead != (o->dl_picks == 1) || o->dl_picks > 1) {
        fprintf(stderr, "outboxd: --id N or --all go with --dead-letters, exactly one of them\n");
        return OB_EXIT_FATAL;
    }
    return dead ? ob_cmd_replay_dead_letters(cfg, o->dl_id, o->dry_run) : ob_cmd_replay(cfg, o->what, o->value,
                                                                                         o->dry_run);
}

/* The operator subcommands. status alone runs on a broken file: the running
 * instance may predate the breakage, and it is found by name. */
static const struct {
    const char *name;
    int (*run)(const ob_cfg_t *cfg, const cli_opts_t *o);
    int         lenient;
} commands[] = {
    { "status", cli_status, 1 },
    { "migrate", cli_migrate, 0 },
    { "reconcile", cli_reconcile, 0 },
    { "replay", cli_replay, 0 },
};

static int
run_subcommand(int which, int argc, char **argv)
{
    cli_opts_t o;
    ob_cfg_t  *cfg;
    char       err[1024];
    int        rc;

    if (cli_parse(commands[which].name, argc, argv, &o) != 0)
        return OB_EXIT_FATAL;
    if (o.help)
        return ob_help_command(stdout, commands[which].name) == 0 ? OB_EXIT_OK : OB_EXIT_FATAL;
    cfg = malloc(sizeof(*cfg));
    if (cfg == NULL)
        return OB_EXIT_RETRY;
    if (commands[which].lenient && ob_cfg_load(cfg, o.path, err, sizeof(err)) != 0) {
        fprintf(stderr, "outboxd: warning: %s\n", err);
        ob_cfg_defaults(cfg);
        ob_cfg_peek_name(o.path, cfg->supervisor.name, sizeof(cfg->supervisor.name));
    } else if (!commands[which].lenient && load_config(o.path, cfg) != 0) {
        free(cfg);
        return OB_EXIT_FATAL;
    }
    ob_pg_set_peer_timeout(cfg->postgres.peer_timeout_s);
    rc = commands[which].run(cfg, &o);
    free(cfg);
    return rc;
}

/* Record signing as -t sees it: key ids only, every secret as "***". */
static void
print_signing(const ob_cfg_t *cfg)
{
    ob_rsig_keyring_t ring;
    char              ids[(OB_RSIG_MAX_KEYS + 1) * (OB_RSIG_ID_MAX + 2) + 1] = "";
    size_t            used = 0;

    if (ob_rsig_ring_merge(&cfg->kafka.verify_keys, &cfg->kafka.signing_key, &ring) != 0 || ring.n == 0)
        return;
    if (cfg->kafka.signing_key.len > 0)
        printf("outboxd: record signing: relays sign with key id %s (secret ***)\n", cfg->kafka.signing_key.id);
    for (int i = 0; i < ring.n; i++)
        used += (size_t) snprintf(ids + used, sizeof(ids) - used, "%s%s", i ? ", " : "", ring.keys[i].id);
    printf("outboxd: record signing: consumers accept key ids %s (secrets ***); unsigned records %s\n", ids,
           cfg->kafka.require_signature ? "refused" : "accepted");
}

/* `outboxd -t`: the config as it would run, flags included; 0 valid, 1 not. */
static int
check_config(ob_cfg_t *cfg, const ob_overrides_t *ovr, const char *path)
{
    char err[1024];

    ob_sup_apply_overrides(cfg, ovr);
    if (ob_cfg_validate(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "outboxd: %s\n", err);
        return 1;
    }
    printf("outboxd: configuration file %s is valid\n", path);
    print_signing(cfg);
    print_kafka_props(cfg);
    return 0;
}

/* The schema gate sees the workers the flags ask for; cfg stays the file's, as the supervisor needs it. */
static int
schema_gate(const ob_cfg_t *cfg, const ob_overrides_t *ovr)
{
    ob_cfg_t *eff = malloc(sizeof(*eff));
    int       rc;

    if (eff == NULL)
        return -1;
    *eff = *cfg;
    ob_sup_apply_overrides(eff, ovr);
    rc = ob_cmd_schema_gate(eff);
    free(eff);
    return rc;
}

/* `help [COMMAND]`: 0, or 2 naming what does not exist. */
static int
tool_help(int argc, char **argv)
{
    if (argc == 1) {
        usage(stdout);
        return OB_EXIT_OK;
    }
    if (argc == 2 && argv[1][0] != '\0' && ob_help_command(stdout, argv[1]) == 0)
        return OB_EXIT_OK;
    if (argc == 2)
        fprintf(stderr, "outboxd: there is no command \"%s\"; `outboxd help` lists them\n", argv[1]);
    else
        fprintf(stderr, "outboxd: help takes at most one command, got %d\n", argc - 1);
    return OB_EXIT_FATAL;
}

/*
 * The commands that read no config: help, the generated references, and
 * `COMMAND --help` of each. -1 when argv[0] is none of them.
 */
static int
run_tool(int argc, char **argv)
{
    int wants_help = argc == 2 && strcmp(argv[1], "--help") == 0;

    if (strcmp(argv[0], "help") == 0)
        return wants_help ? ob_help_command(stdout, "help") : tool_help(argc, argv);
    if (strcmp(argv[0], "config-reference") != 0 && strcmp(argv[0], "manpage") != 0)
        return -1;
    if (wants_help)
        return ob_help_command(stdout, argv[0]);
    if (strcmp(argv[0], "config-reference") == 0 && argc == 1)
        return ob_cmd_config_reference(stdout);
    if (strcmp(argv[0], "manpage") == 0 && argc == 2 && strcmp(argv[1], "8") == 0)
        return ob_help_manpage8(stdout, ob_cmd_version_string());
    if (strcmp(argv[0], "manpage") == 0 && argc == 2 && strcmp(argv[1], "5") == 0)
        return ob_cmd_manpage5(stdout, ob_cmd_version_string());
    ob_help_command(stderr, argv[0]);
    return OB_EXIT_FATAL;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "http-workers", required_argument, NULL, 'H' },
        { "relays", required_argument, NULL, 'R' },
        { "consumers", required_argument, NULL, 'C' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    ob_overrides_t ovr = { -1, -1, -1 };
    const char    *path = DEFAULT_CONFIG;
    int            test_only = 0, foreground = 0, ch, rc;
    ob_cfg_t      *cfg;

    if (argc > 1 && (rc = run_tool(argc - 1, argv + 1)) >= 0)
        return rc;
    for (size_t i = 0; argc > 1 && i < OB_ARRAY_LEN(commands); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return run_subcommand((int) i, argc - 1, argv + 1);
    while ((ch = getopt_long(argc, argv, "c:tfh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': path = optarg; break;
        case 't': test_only = 1; break;
        case 'f': foreground = 1; break;
        case 'H': if (parse_count("--http-workers", optarg, &ovr.http) != 0) return OB_EXIT_FATAL; break;
        case 'R': if (parse_count("--relays", optarg, &ovr.relays) != 0) return OB_EXIT_FATAL; break;
        case 'C': if (parse_count("--consumers", optarg, &ovr.consumers) != 0) return OB_EXIT_FATAL; break;
        case 'h': usage(stdout); return OB_EXIT_OK;
        case 'V': ob_cmd_version(stdout); return OB_EXIT_OK;
        default: usage(stderr); return OB_EXIT_FATAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "outboxd: unknown command \"%s\"\n", argv[optind]);
        usage(stderr);
        return OB_EXIT_FATAL;
    }
    cfg = malloc(sizeof(*cfg));
    if (cfg == NULL)
        return OB_EXIT_RETRY;
    if (load_config(path, cfg) != 0) {
        free(cfg);
        return test_only ? 1 : OB_EXIT_FATAL;
    }
    if (test_only) {
        rc = check_config(cfg, &ovr, path);
        free(cfg);
        return rc;
    }
    if (schema_gate(cfg, &ovr) != 0) {
        free(cfg);
        return OB_EXIT_FATAL;
    }
    rc = ob_sup_run(cfg, &ovr, foreground);
    free(cfg);
    return rc;
}
