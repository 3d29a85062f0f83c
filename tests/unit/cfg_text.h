/* tests/unit/cfg_text.h: config files written from text, for the unit tests that parse them. */
#ifndef OB_TEST_CFG_TEXT_H
#define OB_TEST_CFG_TEXT_H

#include "common/cfg.h"

#include <stddef.h>

/* Writes text to a fresh temp file; returns its path (static buffer, valid until the next call). */
const char *obu_write_conf(const char *text);
/* Loads text as a config file (then removes it); returns ob_cfg_load's rc, its error in err. */
int obu_load(const char *text, ob_cfg_t *cfg, char *err, size_t errlen);

#endif
