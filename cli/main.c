/*
 * cli/main.c: command line of the one outboxd binary.
 *
 *   outboxd [-c FILE] [-t] [-f] [--http-workers N] [--relays N] [--consumers N]
 *   outboxd status  [-c FILE] [--json]
 *   outboxd migrate [-c FILE] [--orders-dsn OWNER_DSN] [--ledger-dsn OWNER_DSN]
 *   outboxd reconcile [-c FILE] [--json] [--grace SECONDS]
 *   outboxd replay [-c FILE] (--order ID | --event ID | --since TS | --quarantined
 *                             | --dead-letters (--id N | --all)) [--dry-run]
 *   outboxd config-reference
 *
 * Bad usage exits 2 with a sentence; so does a config that does not parse.
 */
#include "../supervisor/sup.h"
#include "cmd.h"
#include "../common/cfg.h"
#include "../common/kprops.h"
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
    fprintf(out,
            "usage: outboxd [-c FILE] [-t] [-f] [--http-workers N] [--relays N] [--consumers N]\n"
            "       outboxd status [-c FILE] [--json]\n"
            "       outboxd migrate [-c FILE] [--orders-dsn OWNER_DSN] [--ledger-dsn OWNER_DSN]\n"
            "       outboxd reconcile [-c FILE] [--json] [--grace SECONDS]\n"
            "       outboxd replay [-c FILE] (--order ID | --event ID | --since TIMESTAMP | --quarantined) [--dry-run]\n"
            "       outboxd replay [-c FILE] --dead-letters (--id N | --all) [--dry-run]\n"
            "       outboxd config-reference   (every config key, its default and reload rule, as Markdown)\n"
            "  -c FILE   config file (default %s)\n"
            "  -t        validate the config and exit (0 valid, 1 invalid)\n"
            "  -f        stay in the foreground\n"
            "Flags override the file at start; a reload keeps a flag's value until\n"
            "the file's own value for that key changes.\n",
            DEFAULT_CONFIG);
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

/* `outboxd status|migrate|reconcile|replay ...`: -c and each one's own options. */
static int
run_subcommand(const char *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, 'j' },       { "order", required_argument, NULL, 'o' },
        { "event", required_argument, NULL, 'e' }, { "since", required_argument, NULL, 's' },
        { "quarantined", no_argument, NULL, 'q' }, { "dry-run", no_argument, NULL, 'n' },
        { "grace", required_argument, NULL, 'g' },
        { "dead-letters", no_argument, NULL, 'D' }, { "id", required_argument, NULL, 'i' },
        { "all", no_argument, NULL, 'a' },
        { "orders-dsn", required_argument, NULL, 'O' }, { "ledger-dsn", required_argument, NULL, 'L' },
        { NULL, 0, NULL, 0 },
    };
    const char *path = DEFAULT_CONFIG, *what = NULL, *value = NULL, *dl_id = NULL, *owner[2] = { NULL, NULL };
    int         json = 0, dry_run = 0, ch, picks = 0, grace = 10, dl_picks = 0;
    ob_cfg_t   *cfg;
    char        err[1024];

    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:", opts, NULL)) != -1) {
        if (ch == 'c')
            path = optarg;
        else if (ch == 'j')
            json = 1;
        else if (ch == 'n')
            dry_run = 1;
        else if (ch == 'O' || ch == 'L')
            owner[ch == 'L'] = optarg;     /* migrate as the schema's owner */
        else if (ch == 'g') {
            if (ob_cfg_parse_duration(optarg, &grace) != 0) {
                fprintf(stderr, "outboxd: --grace expects seconds (or 90s, 5m), got \"%s\"\n", optarg);
                return OB_EXIT_FATAL;
            }
        }
        else if (ch == 'o' || ch == 'e' || ch == 's' || ch == 'q' || ch == 'D') {
            what = ch == 'o' ? "order" : ch == 'e' ? "event" : ch == 's' ? "since" : ch == 'q' ? "quarantined"
                                                                                             : "dead-letters";
            value = ch == 'q' || ch == 'D' ? NULL : optarg;
            picks++;
        } else if (ch == 'i' || ch == 'a') {
            if (ch == 'i' && parse_id(optarg) != 0)
                return OB_EXIT_FATAL;
            dl_id = ch == 'i' ? optarg : NULL;
            dl_picks++;
        } else {
            usage(stderr);
            return OB_EXIT_FATAL;
        }
    }
    cfg = malloc(sizeof(*cfg));
    if (cfg == NULL)
        return OB_EXIT_RETRY;
    if (strcmp(cmd, "status") == 0 && ob_cfg_load(cfg, path, err, sizeof(err)) != 0) {
        /* the running instance may predate the breakage: find it by name */
        fprintf(stderr, "outboxd: warning: %s\n", err);
        ob_cfg_defaults(cfg);
        ob_cfg_peek_name(path, cfg->supervisor.name, sizeof(cfg->supervisor.name));
    } else if (strcmp(cmd, "status") != 0 && load_config(path, cfg) != 0) {
        free(cfg);
        return OB_EXIT_FATAL;
    }
    int rc;
    if (strcmp(cmd, "status") == 0)
        rc = ob_cmd_status(cfg, json);
    else if (strcmp(cmd, "reconcile") == 0)
        rc = ob_cmd_reconcile(cfg, json, grace);
    else if (strcmp(cmd, "replay") == 0) {
        if (picks != 1) {
            fprintf(stderr,
                    "outboxd: replay needs exactly one of --order, --event, --since, --quarantined, --dead-letters\n");
            rc = OB_EXIT_FATAL;
        } else if ((strcmp(what, "dead-letters") == 0) != (dl_picks == 1) || dl_picks > 1) {
            fprintf(stderr, "outboxd: --id N or --all go with --dead-letters, exactly one of them\n");
            rc = OB_EXIT_FATAL;
        } else if (strcmp(what, "dead-letters") == 0) {
            rc = ob_cmd_replay_dead_letters(cfg, dl_id, dry_run);
        } else {
            rc = ob_cmd_replay(cfg, what, value, dry_run);
        }
    } else
        rc = ob_cmd_migrate(cfg, owner[0], owner[1]);
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

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "http-workers", required_argument, NULL, 'H' },
        { "relays", required_argument, NULL, 'R' },
        { "consumers", required_argument, NULL, 'C' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    ob_overrides_t ovr = { -1, -1, -1 };
    const char    *path = DEFAULT_CONFIG;
    int            test_only = 0, foreground = 0, ch, rc;
    ob_cfg_t      *cfg;
    char           err[1024];

    if (argc == 2 && strcmp(argv[1], "config-reference") == 0)
        return ob_cmd_config_reference(stdout);
    if (argc > 1 && (strcmp(argv[1], "status") == 0 || strcmp(argv[1], "migrate") == 0 ||
                     strcmp(argv[1], "replay") == 0 || strcmp(argv[1], "reconcile") == 0))
        return run_subcommand(argv[1], argc - 1, argv + 1);
    while ((ch = getopt_long(argc, argv, "c:tfh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': path = optarg; break;
        case 't': test_only = 1; break;
        case 'f': foreground = 1; break;
        case 'H': if (parse_count("--http-workers", optarg, &ovr.http) != 0) return OB_EXIT_FATAL; break;
        case 'R': if (parse_count("--relays", optarg, &ovr.relays) != 0) return OB_EXIT_FATAL; break;
        case 'C': if (parse_count("--consumers", optarg, &ovr.consumers) != 0) return OB_EXIT_FATAL; break;
        case 'h': usage(stdout); return OB_EXIT_OK;
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
        ob_sup_apply_overrides(cfg, &ovr);
        rc = ob_cfg_validate(cfg, err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "outboxd: %s\n", err);
        else {
            printf("outboxd: configuration file %s is valid\n", path);
            print_signing(cfg);
            print_kafka_props(cfg);
        }
        free(cfg);
        return rc == 0 ? 0 : 1;
    }
    rc = ob_sup_run(cfg, &ovr, foreground);
    free(cfg);
    return rc;
}
