#include <stdio.h>

#include "commands.h"

int cmd_loadtest(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "tessera loadtest: not built yet\n");
    return 2;
}
