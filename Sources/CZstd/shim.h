#ifndef PKM_CZSTD_SHIM_H
#define PKM_CZSTD_SHIM_H

#include <zstd.h>
#include <zstd_errors.h>
static inline unsigned long long pkm_zstd_contentsize_unknown(void) { return ZSTD_CONTENTSIZE_UNKNOWN; }
static inline unsigned long long pkm_zstd_contentsize_error(void) { return ZSTD_CONTENTSIZE_ERROR; }
#endif
