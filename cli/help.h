/* cli/help.h: the usage of every command, and outboxd(8), from one table. */
#ifndef OB_HELP_H
#define OB_HELP_H

#include <stdio.h>

/* Every command's synopsis and the daemon's common flags. */
void ob_help_usage(FILE *out);
/* One command's synopsis, description and options ("" is the daemon); -1 when there is no such command. */
int  ob_help_command(FILE *out, const char *name);
/* The roff source of outboxd(8); 0, or 1 on a write error. */
int  ob_help_manpage8(FILE *out, const char *version);

#endif
