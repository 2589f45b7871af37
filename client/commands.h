/* The subcommands of `tessera` that live outside client/tessera.c. Each takes the arguments after
 * its own name (argv[0] is the first of them; argc may be 0) and returns the process exit status. */
#ifndef TESSERA_COMMANDS_H
#define TESSERA_COMMANDS_H

int cmd_serve(int argc, char **argv);    /* client/cmd_serve.c */
int cmd_status(int argc, char **argv);   /* client/cmd_serve.c */
int cmd_predict(int argc, char **argv);  /* client/cmd_predict.c */
int cmd_loadtest(int argc, char **argv); /* client/cmd_loadtest.c */
int cmd_datagen(int argc, char **argv);  /* client/cmd_datagen.c */

/* Shared by predict and loadtest (client/cmd_predict.c); their number parsing is common/util.h's. */
/* Loads up to `limit` (0 = all) examples of an IDX file of unsigned bytes (gzip or plain) as model
 * inputs scaled like the training data, (b / 255 - mean) / std (std <= 0: b / 255, with a
 * warning), into *x (malloc'd, *n x *dim). Returns 0, or -1 with a message naming the file. */
int idx_load_inputs(const char *path, long limit, double mean, double std, float **x, size_t *n, size_t *dim,
                    char *err, size_t errlen);

#endif
