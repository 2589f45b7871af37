/* Metrics: AUC against a brute-force pair count (ties half), its extremes and the one-class case;
 * log-loss against the direct formula, also where exp() of the logit overflows. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "expect.h"
#include "metrics.h"
#include "util.h"

/* The Mann-Whitney statistic by definition: O(n^2). */
static double auc_pairs(const float *s, const int32_t *y, size_t n) {
    double wins = 0, pairs = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (y[i] && !y[j]) {
                pairs += 1;
                wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
            }
    return wins / pairs;
}

int main(void) {
    rng_t r;
    rng_seed(&r, 7);
    enum { N = 3000 };
    static float s[N];
    static int32_t y[N];
    for (int trial = 0; trial < 6; trial++) {
        size_t n = trial == 0 ? 2 : trial == 1 ? 17 : N;
        int levels = trial % 2 ? 5 : 1000; /* few levels: many ties */
        for (size_t i = 0; i < n; i++) {
            y[i] = (int32_t)rng_below(&r, 2);
            s[i] = (float)rng_below(&r, (uint64_t)levels) + 0.7f * (float)y[i] * (float)(trial > 2);
        }
        y[0] = 1, y[1] = 0; /* both classes */
        EXPECT_NEAR(metric_auc(s, y, n), auc_pairs(s, y, n), 1e-12);
    }

    /* All tied: 0.5. Perfect and inverse order: 1 and 0. */
    for (size_t i = 0; i < 100; i++) {
        y[i] = i % 3 == 0;
        s[i] = 0.25f;
    }
    EXPECT_NEAR(metric_auc(s, y, 100), 0.5, 1e-12);
    for (size_t i = 0; i < 100; i++)
        s[i] = y[i] ? 10.0f + (float)i : -(float)i;
    EXPECT_NEAR(metric_auc(s, y, 100), 1.0, 1e-12);
    for (size_t i = 0; i < 100; i++)
        s[i] = -s[i];
    EXPECT_NEAR(metric_auc(s, y, 100), 0.0, 1e-12);

    /* One class, or nothing: undefined. */
    for (size_t i = 0; i < 100; i++)
        y[i] = 1;
    EXPECT(isnan(metric_auc(s, y, 100)), "only positives: %g", metric_auc(s, y, 100));
    for (size_t i = 0; i < 100; i++)
        y[i] = 0;
    EXPECT(isnan(metric_auc(s, y, 100)), "only negatives: %g", metric_auc(s, y, 100));
    EXPECT(isnan(metric_auc(s, y, 0)), "empty");

    /* Log-loss: -mean(y log p + (1 - y) log(1 - p)), p = sigmoid(x), where that is exact enough. */
    double direct = 0;
    for (size_t i = 0; i < 200; i++) {
        s[i] = (float)((double)rng_below(&r, 20001) / 1000.0 - 10.0);
        y[i] = (int32_t)rng_below(&r, 2);
        double p = 1.0 / (1.0 + exp(-(double)s[i]));
        direct -= y[i] ? log(p) : log1p(-p);
    }
    EXPECT_NEAR(metric_logloss(s, y, 200), direct / 200, 1e-12);
    /* Large |logit|: a confident right answer costs ~exp(-|x|), a confident wrong one ~|x|. */
    float big[4] = {1000.0f, -1000.0f, 1000.0f, -1000.0f};
    int32_t yb[4] = {1, 0, 0, 1};
    EXPECT_NEAR(metric_logloss(big, yb, 2), 0.0, 1e-300);
    EXPECT_NEAR(metric_logloss(big + 2, yb + 2, 2), 1000.0, 1e-9);
    float mid[2] = {40.0f, -40.0f};
    int32_t ym[2] = {0, 0};
    EXPECT_NEAR(metric_logloss(mid, ym, 2), (40.0 + log1p(exp(-40.0)) + log1p(exp(-40.0))) / 2, 1e-12);
    float zero[1] = {0.0f};
    EXPECT_NEAR(metric_logloss(zero, ym, 1), log(2.0), 1e-15);
    EXPECT(isnan(metric_logloss(s, y, 0)), "empty");
    EXPECT_DONE();
}
