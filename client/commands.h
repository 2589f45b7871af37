/* The subcommands of `tessera` that live outside client/tessera.c. Each takes the arguments after
 * its own name (argv[0] is the first of them; argc may be 0) and returns the process exit status. */
#ifndef TESSERA_COMMANDS_H
#define TESSERA_COMMANDS_H

int cmd_serve(int argc, char **argv);    /* client/cmd_serve.c */
int cmd_predict(int argc, char **argv);  /* client/cmd_predict.c */
int cmd_loadtest(int argc, char **argv); /* client/cmd_loadtest.c */

#endif
