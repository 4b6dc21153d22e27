/* lsdemo-hello: prints the install prefix compiled into the binary.
 * Built with -DINSTALL_PREFIX="\"$PREFIX\"" so rattler-build records a binary placeholder. */
#include <stdio.h>

#ifndef INSTALL_PREFIX
#error "INSTALL_PREFIX must be defined"
#endif

int main(void) {
    printf("lsdemo-hello from %s\n", INSTALL_PREFIX);
    return 0;
}
