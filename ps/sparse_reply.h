/* The answer to a SPARSE_PULL, shared by training shards (ps/server.c) and serving shards
 * (ps/serve.c): each request tensor is the ids of one table, each reply tensor that table's rows. */
#ifndef TESSERA_PS_SPARSE_REPLY_H
#define TESSERA_PS_SPARSE_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "sparse_table.h"
#include "wire.h"

/* Checks request tensor i: the row ids (U64 [n, 1]) of one of n_tables tables. 0 or -TS_EINVAL. */
int sparse_ids_check(const Tessera__TensorDesc *d, size_t i, int n_tables, char *err, size_t errlen);

/* Answers SPARSE_PULL `m` on `sock` with SPARSE_ROWS: tensor i of the reply holds the rows [n, dim] of
 * request tensor i's ids (tensor id = table). With `create`, rows of dynamic tables not held yet are
 * created (charging the budget); otherwise they come back with their initial values and nothing
 * changes. `version` goes into the reply's model_version. Returns the rows sent, or a negative code
 * (-TS_EINVAL, -TS_ENOMEM) with a message and nothing sent: the caller answers the error. */
long sparse_pull_answer(void *sock, wire_msg_t *m, sparse_table_t **tables, int n_tables, int create,
                        uint64_t version, char *err, size_t errlen);

#endif
