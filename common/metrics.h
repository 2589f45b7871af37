/* Evaluation metrics for binary classifiers: ROC AUC and log-loss. */
#ifndef TESSERA_METRICS_H
#define TESSERA_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Area under the ROC curve of scores against 0/1 labels, ties counted half (the Mann-Whitney statistic
 * with average ranks). Returns NAN when only one class is present. Sorts a copy: O(n log n).
 * A nonzero label counts as positive; NaN scores rank below every number. */
double metric_auc(const float *score, const int32_t *label, size_t n);
/* Mean binary cross-entropy of logits (numerically stable: max(x,0) - x*y + log1p(exp(-|x|))).
 * A nonzero label counts as 1. NAN when n is 0. */
double metric_logloss(const float *logit, const int32_t *label, size_t n);

#endif
