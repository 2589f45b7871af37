/* Optimizer steps against values computed by hand (PyTorch's update rules). */
#include <math.h>

#include "expect.h"
#include "optim.h"

static optim_t make(opt_kind_t kind, float lr) {
    optim_t o = {.kind = kind, .lr = lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .momentum = 0.9f};
    return o;
}

int main(void) {
    const float g1[2] = {0.5f, -2.0f}, g2[2] = {1.5f, 4.0f};
    const float *one[1] = {g1}, *two[2] = {g1, g2};

    { /* SGD: p -= lr * g */
        optim_t o = make(OPT_SGD, 0.1f);
        float p[2] = {1.0f, 1.0f};
        optim_apply(&o, p, NULL, NULL, one, 1, 1.0f, 2, 1);
        EXPECT_NEAR(p[0], 0.95, 1e-7);
        EXPECT_NEAR(p[1], 1.2, 1e-7);
    }
    { /* SGD with weight decay 0.01: p -= lr * (g + wd p) */
        optim_t o = make(OPT_SGD, 0.1f);
        o.weight_decay = 0.01f;
        float p[2] = {1.0f, 1.0f};
        optim_apply(&o, p, NULL, NULL, one, 1, 1.0f, 2, 1);
        EXPECT_NEAR(p[0], 1.0 - 0.1 * (0.5 + 0.01), 1e-7);
    }
    { /* Two workers' gradients are averaged (gscale 1/2) before the step: mean = (1.0, 1.0) */
        optim_t o = make(OPT_SGD, 0.1f);
        float p[2] = {0.0f, 0.0f};
        optim_apply(&o, p, NULL, NULL, two, 2, 0.5f, 2, 1);
        EXPECT_NEAR(p[0], -0.1, 1e-7);
        EXPECT_NEAR(p[1], -0.1, 1e-7);
    }
    { /* Momentum: v = mu v + g; p -= lr v. Two steps with g = 0.5: v = 0.5 then 0.95. */
        optim_t o = make(OPT_MOMENTUM, 0.1f);
        float p[2] = {1.0f, 1.0f}, v[2] = {0, 0};
        optim_apply(&o, p, v, NULL, one, 1, 1.0f, 2, 1);
        EXPECT_NEAR(v[0], 0.5, 1e-7);
        EXPECT_NEAR(p[0], 0.95, 1e-7);
        optim_apply(&o, p, v, NULL, one, 1, 1.0f, 2, 2);
        EXPECT_NEAR(v[0], 0.95, 1e-7);
        EXPECT_NEAR(p[0], 0.855, 1e-6);
    }
    { /* Adam, step 1: m = 0.1 g, v = 0.001 g^2, mhat = g, vhat = g^2: p -= lr * g / (|g| + eps) */
        optim_t o = make(OPT_ADAM, 0.01f);
        float p[2] = {1.0f, 1.0f}, m[2] = {0, 0}, v[2] = {0, 0};
        optim_apply(&o, p, m, v, one, 1, 1.0f, 2, 1);
        EXPECT_NEAR(m[0], 0.05, 1e-7);
        EXPECT_NEAR(v[0], 0.00025, 1e-8);
        EXPECT_NEAR(p[0], 0.99, 1e-6);
        EXPECT_NEAR(p[1], 1.01, 1e-6);
        /* step 2 with g = (1.5, 4): m = 0.9*0.05 + 0.1*1.5 = 0.195; v = 0.999*0.00025 + 0.001*2.25
         * = 0.00249975; mhat = 0.195/0.19 = 1.026316; vhat = 0.00249975/0.001999 = 1.250500;
         * p = 0.99 - 0.01 * 1.026316 / 1.118258 = 0.980822 */
        const float *g[1] = {g2};
        optim_apply(&o, p, m, v, g, 1, 1.0f, 2, 2);
        EXPECT_NEAR(m[0], 0.195, 1e-6);
        EXPECT_NEAR(v[0], 0.00249975, 1e-7);
        EXPECT_NEAR(p[0], 0.980822, 2e-6);
    }
    { /* AdamW decays the weight before the Adam step: p = 1 * (1 - 0.01 * 0.1) - 0.01 */
        optim_t o = make(OPT_ADAMW, 0.01f);
        o.weight_decay = 0.1f;
        float p[2] = {1.0f, 1.0f}, m[2] = {0, 0}, v[2] = {0, 0};
        optim_apply(&o, p, m, v, one, 1, 1.0f, 2, 1);
        EXPECT_NEAR(p[0], 0.999 - 0.01, 1e-6);
    }
    { /* AdaGrad: s += g^2; p -= lr g / (sqrt(s) + eps) */
        optim_t o = make(OPT_ADAGRAD, 0.1f);
        o.eps = 1e-10f;
        float p[2] = {1.0f, 1.0f}, s[2] = {0, 0};
        optim_apply(&o, p, s, NULL, one, 1, 1.0f, 2, 1);
        EXPECT_NEAR(s[1], 4.0, 1e-7);
        EXPECT_NEAR(p[1], 1.1, 1e-6);
        const float *g[1] = {g2};
        optim_apply(&o, p, s, NULL, g, 1, 1.0f, 2, 2);
        EXPECT_NEAR(s[1], 20.0, 1e-5);
        EXPECT_NEAR(p[1], 1.1 - 0.1 * 4.0 / sqrt(20.0), 1e-6);
    }
    EXPECT_DONE();
}
