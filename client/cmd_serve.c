#include <stdio.h>

#include "commands.h"

int cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "tessera serve: not built yet\n");
    return 2;
}
