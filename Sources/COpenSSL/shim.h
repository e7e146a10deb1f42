#ifndef PKM_COPENSSL_SHIM_H
#define PKM_COPENSSL_SHIM_H
// libcrypto (Debian libssl-dev) for SHA-256 with the CPU's SHA extensions.
#include <openssl/evp.h>
#endif
