/* SGD's update on a CPU in one pass, torch's values bit for bit (harness/detectors/sgd.py explains).

   For each parameter tensor t (params[t], grads[t], buffers[t]: contiguous, sizes[t] elements each) and
   each element, the operations torch's _single_tensor_sgd applies, in its order and with its roundings:

       d = fma(p, weight_decay, g)     grad.add(param, alpha=weight_decay)  (skipped when weight_decay == 0)
       b = b * momentum                buf.mul_(momentum)
       b = b + d                       buf.add_(d)                          (alpha 1 - dampening = 1)
       p = fma(b, negative_lr, p)      param.add_(buf, alpha=-lr)

   ATen computes `a + alpha * b` as one fused multiply-add on CPUs with AVX2 (sgd.py uses this kernel only
   there), so fma() here, and -ffp-contract=off keeps the compiler from fusing anything else. */

#include <math.h>
#include <stdint.h>

#define SGD_UPDATE(NAME, T, FMA)                                                                         \
    void NAME(int64_t count, T *const *params, const T *const *grads, T *const *buffers,                  \
              const int64_t *sizes, T weight_decay, T momentum, T negative_lr) {                         \
        for (int64_t t = 0; t < count; t++) {                                                            \
            T *p = params[t];                                                                            \
            const T *g = grads[t];                                                                       \
            T *b = buffers[t];                                                                           \
            const int64_t n = sizes[t];                                                                  \
            if (weight_decay != 0) {                                                                     \
                for (int64_t i = 0; i < n; i++) {                                                        \
                    const T d = FMA(p[i], weight_decay, g[i]);                                           \
                    const T v = b[i] * momentum + d; /* two roundings: -ffp-contract=off */             \
                    b[i] = v;                                                                            \
                    p[i] = FMA(v, negative_lr, p[i]);                                                    \
                }                                                                                        \
            } else {                                                                                     \
                for (int64_t i = 0; i < n; i++) {                                                        \
                    const T v = b[i] * momentum + g[i];                                                  \
                    b[i] = v;                                                                            \
                    p[i] = FMA(v, negative_lr, p[i]);                                                    \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }

SGD_UPDATE(sgd_update_f32, float, fmaf)
SGD_UPDATE(sgd_update_f64, double, fma)
