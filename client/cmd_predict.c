#include <stdio.h>

#include "commands.h"

int cmd_predict(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "tessera predict: not built yet\n");
    return 2;
}
