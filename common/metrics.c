#include "metrics.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    float score;
    int32_t positive;
} scored_t;

/* Ascending score, NaN first, so that equal scores are adjacent. */
static int cmp_scored(const void *a, const void *b) {
    float x = ((const scored_t *)a)->score, y = ((const scored_t *)b)->score;
    int xn = isnan(x), yn = isnan(y);
    if (xn || yn) return yn - xn;
    return (x > y) - (x < y);
}

double metric_auc(const float *score, const int32_t *label, size_t n) {
    scored_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return NAN;
    for (size_t i = 0; i < n; i++)
        v[i] = (scored_t){score[i], label[i] != 0};
    qsort(v, n, sizeof *v, cmp_scored);
    /* Each positive beats the negatives below its tie group and half of those inside it. */
    uint64_t neg_below = 0, pos = 0;
    long double wins2 = 0; /* twice the number of (positive, negative) pairs ordered right */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        uint64_t p = 0, q = 0;
        for (; j < n && (v[j].score == v[i].score || (isnan(v[j].score) && isnan(v[i].score))); j++)
            if (v[j].positive)
                p++;
            else
                q++;
        wins2 += (long double)p * (long double)(2 * neg_below + q);
        neg_below += q;
        pos += p;
        i = j;
    }
    free(v);
    if (pos == 0 || neg_below == 0) return NAN;
    return (double)(wins2 / (2.0L * (long double)pos * (long double)neg_below));
}

double metric_logloss(const float *logit, const int32_t *label, size_t n) {
    if (n == 0) return NAN;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        double x = logit[i], y = label[i] != 0;
        sum += fmax(x, 0.0) - x * y + log1p(exp(-fabs(x)));
    }
    return sum / (double)n;
}
