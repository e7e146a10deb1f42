#ifndef PKM_CBLAS_SHIM_H
#define PKM_CBLAS_SHIM_H
// OpenBLAS from Debian (libopenblas-dev). cblas.h is installed under /usr/include/x86_64-linux-gnu
// through the alternatives system; OpenBLAS' own header also declares openblas_set_num_threads.
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);
#endif
