/* cli/roff.h: man(7) output from the Markdown subset of the reference texts. */
#ifndef OB_ROFF_H
#define OB_ROFF_H

#include <stddef.h>
#include <stdio.h>

/* n bytes of Markdown inline text (`code`, *emphasis*, \| escapes) as roff, no newline. */
void ob_roff_inline(FILE *out, const char *s, size_t n);
/* A Markdown text (## headings, paragraphs, "- " items, HTML comments) as man(7) requests. */
void ob_roff_markdown(FILE *out, const char *md);
/* .TH and the NAME section of page name(section). */
void ob_roff_header(FILE *out, const char *name, int section, const char *version, const char *summary);

#endif
