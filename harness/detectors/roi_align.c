/* RoIAlign (average pooling) on a CPU over channels-last feature maps, forward and input gradient.
 *
 * The values are torchvision's CPU kernels' bit for bit (torchvision/csrc/ops/cpu/roi_align_kernel.cpp,
 * roi_align_common.h): every sample's position, bilinear weights and the order of every sum per channel are
 * theirs. What differs is the layout: torchvision loops over channels outside its samples and reads each
 * channel's plane one scalar at a time (its backward even recomputes every sample's weights for every
 * channel); here the map is channels last, so a sample's four neighbours are four runs of C contiguous
 * values and the loop over channels is innermost (vectorised by the compiler, one lane per channel, so each
 * channel's additions keep torchvision's order). Each RoI's sample positions along y and x are computed
 * once per axis (RoIAlign's grid is separable) with torchvision's formulas.
 *
 * Built by harness/detectors/native.py (cc -O3 -ffp-contract=off: no fused multiply-adds, which would round
 * differently) and called through ctypes by harness/detectors/kernels.py; tests/test_kernels.py checks the
 * results against torchvision's kernels with torch.equal, in float32 and float64.
 *
 * Arguments (every array contiguous): input / grad_input (N, H, W, C); rois (R, 5: image, x1, y1, x2, y2) in
 * the maps' dtype; output / grad_output (R, C, ph_n, pw_n). grad_input must be zeroed by the caller.
 * Return 0, or 1 when memory ran out.
 */
#include <stdint.h>
#include <stdlib.h>
#include <math.h>

#define BLOCK 16 /* channels summed at once in the forward: the accumulators stay in registers */

#define DEFINE_ROI_ALIGN(T, SUFFIX)                                                                           \
                                                                                                              \
/* One sample's neighbours along one axis (torchvision's bilinear_interpolate, per axis). */                  \
typedef struct { int64_t low, high; T l, h; int valid; } Axis_##SUFFIX;                                      \
                                                                                                              \
typedef struct { int64_t pos1, pos2, pos3, pos4; T w1, w2, w3, w4; int valid; } Sample_##SUFFIX;             \
                                                                                                              \
static void axis_##SUFFIX(T coord, int64_t length, Axis_##SUFFIX *a) {                                        \
  a->low = a->high = 0; a->l = a->h = 0; a->valid = 0;                                                        \
  if (coord < -1.0 || coord > length) return; /* outside the map: the sample counts zero */                   \
  if (coord <= 0) coord = 0;                                                                                  \
  int low = (int)coord, high;                                                                                 \
  if (low >= length - 1) {                                                                                    \
    high = low = (int)length - 1;                                                                             \
    coord = (T)low;                                                                                           \
  } else {                                                                                                    \
    high = low + 1;                                                                                           \
  }                                                                                                           \
  a->low = low; a->high = high;                                                                               \
  a->l = coord - low;                                                                                         \
  a->h = 1. - a->l;                                                                                           \
  a->valid = 1;                                                                                               \
}                                                                                                             \
                                                                                                              \
/* The RoI's bins and samples (torchvision's roi_start_*, bin_size_*, roi_bin_grid_*), then the neighbours    \
   of every sample row (ph, iy) and column (pw, ix); grows *samples to a bin's samples. Returns 0 when        \
   memory ran out (*ys, *xs freed). */                                                                        \
static int geometry_##SUFFIX(const T *roi, double spatial_scale, int ph_n, int pw_n, int sampling_ratio,      \
                             int aligned, int64_t height, int64_t width, int *grid_h, int *grid_w,            \
                             Axis_##SUFFIX **ys, Axis_##SUFFIX **xs, Sample_##SUFFIX **samples,               \
                             int64_t *capacity) {                                                             \
  T offset = aligned ? (T)0.5 : (T)0.0;                                                                       \
  T roi_start_w = roi[1] * spatial_scale - offset;                                                            \
  T roi_start_h = roi[2] * spatial_scale - offset;                                                            \
  T roi_end_w = roi[3] * spatial_scale - offset;                                                              \
  T roi_end_h = roi[4] * spatial_scale - offset;                                                              \
  T roi_width = roi_end_w - roi_start_w;                                                                      \
  T roi_height = roi_end_h - roi_start_h;                                                                     \
  if (!aligned) { /* the legacy RoIAlign makes every RoI at least one cell wide */                            \
    if (roi_width < (T)1.) roi_width = (T)1.;                                                                 \
    if (roi_height < (T)1.) roi_height = (T)1.;                                                               \
  }                                                                                                           \
  T bin_h = (T)roi_height / (T)ph_n;                                                                          \
  T bin_w = (T)roi_width / (T)pw_n;                                                                           \
  *grid_h = (sampling_ratio > 0) ? sampling_ratio : (int)ceil(roi_height / ph_n);                             \
  *grid_w = (sampling_ratio > 0) ? sampling_ratio : (int)ceil(roi_width / pw_n);                              \
  *ys = malloc(sizeof(Axis_##SUFFIX) * ((size_t)ph_n * *grid_h + 1));                                         \
  *xs = malloc(sizeof(Axis_##SUFFIX) * ((size_t)pw_n * *grid_w + 1));                                         \
  if (!*ys || !*xs) { free(*ys); free(*xs); return 0; }                                                       \
  for (int ph = 0; ph < ph_n; ph++)                                                                           \
    for (int iy = 0; iy < *grid_h; iy++) {                                                                    \
      const T y = roi_start_h + ph * bin_h + (T)(iy + .5f) * bin_h / (T)*grid_h;                              \
      axis_##SUFFIX(y, height, &(*ys)[ph * *grid_h + iy]);                                                    \
    }                                                                                                         \
  for (int pw = 0; pw < pw_n; pw++)                                                                           \
    for (int ix = 0; ix < *grid_w; ix++) {                                                                    \
      const T x = roi_start_w + pw * bin_w + (T)(ix + .5f) * bin_w / (T)*grid_w;                              \
      axis_##SUFFIX(x, width, &(*xs)[pw * *grid_w + ix]);                                                     \
    }                                                                                                         \
  if ((int64_t)*grid_h * *grid_w > *capacity) {                                                               \
    free(*samples);                                                                                           \
    *capacity = (int64_t)*grid_h * *grid_w;                                                                   \
    *samples = malloc(sizeof(Sample_##SUFFIX) * *capacity);                                                   \
    if (!*samples) { free(*ys); free(*xs); return 0; }                                                        \
  }                                                                                                           \
  return 1;                                                                                                   \
}                                                                                                             \
                                                                                                              \
/* The samples of bin (ph, pw), row-major over (iy, ix) as torchvision visits them; positions in values      \
   (cell index x channels); a sample outside the map has weights 0 at position 0, as in torchvision. */      \
static void bin_samples_##SUFFIX(const Axis_##SUFFIX *y_axis, const Axis_##SUFFIX *x_axis, int grid_h,        \
                                 int grid_w, int64_t width, int64_t channels, Sample_##SUFFIX *out) {         \
  for (int iy = 0; iy < grid_h; iy++) {                                                                       \
    const Axis_##SUFFIX *y = &y_axis[iy];                                                                     \
    for (int ix = 0; ix < grid_w; ix++) {                                                                     \
      const Axis_##SUFFIX *x = &x_axis[ix];                                                                   \
      Sample_##SUFFIX *s = &out[iy * grid_w + ix];                                                            \
      if (!(y->valid && x->valid)) {                                                                          \
        s->pos1 = s->pos2 = s->pos3 = s->pos4 = 0;                                                            \
        s->w1 = s->w2 = s->w3 = s->w4 = 0;                                                                    \
        s->valid = 0;                                                                                         \
        continue;                                                                                             \
      }                                                                                                       \
      s->w1 = y->h * x->h; s->w2 = y->h * x->l; s->w3 = y->l * x->h; s->w4 = y->l * x->l;                     \
      s->pos1 = (y->low * width + x->low) * channels;                                                         \
      s->pos2 = (y->low * width + x->high) * channels;                                                        \
      s->pos3 = (y->high * width + x->low) * channels;                                                        \
      s->pos4 = (y->high * width + x->high) * channels;                                                       \
      s->valid = 1;                                                                                           \
    }                                                                                                         \
  }                                                                                                           \
}                                                                                                             \
                                                                                                              \
int roi_align_forward_##SUFFIX(const T *input, const T *rois, int64_t count_rois, int64_t channels,            \
                               int64_t height, int64_t width, int ph_n, int pw_n, double spatial_scale,       \
                               int sampling_ratio, int aligned, T *output) {                                  \
  Sample_##SUFFIX *samples = NULL;                                                                            \
  int64_t capacity = 0;                                                                                       \
  const int64_t bins = (int64_t)ph_n * pw_n;                                                                  \
  for (int64_t n = 0; n < count_rois; n++) {                                                                  \
    const T *roi = rois + n * 5;                                                                              \
    const T *image = input + (int64_t)roi[0] * height * width * channels;                                     \
    int grid_h, grid_w;                                                                                       \
    Axis_##SUFFIX *ys, *xs;                                                                                   \
    if (!geometry_##SUFFIX(roi, spatial_scale, ph_n, pw_n, sampling_ratio, aligned, height, width, &grid_h,   \
                           &grid_w, &ys, &xs, &samples, &capacity)) { free(samples); return 1; }              \
    const int64_t per_bin = (int64_t)grid_h * grid_w;                                                         \
    const T count = per_bin > 1 ? (T)per_bin : (T)1;                                                          \
    T *out_roi = output + n * channels * bins;                                                                \
    for (int ph = 0; ph < ph_n; ph++) {                                                                       \
      for (int pw = 0; pw < pw_n; pw++) {                                                                     \
        bin_samples_##SUFFIX(ys + ph * grid_h, xs + pw * grid_w, grid_h, grid_w, width, channels, samples);   \
        T *out = out_roi + ph * pw_n + pw;                                                                    \
        int64_t c0 = 0;                                                                                       \
        for (; c0 + BLOCK <= channels; c0 += BLOCK) {                                                         \
          T acc[BLOCK] = {0};                                                                                 \
          for (int64_t s = 0; s < per_bin; s++) {                                                             \
            const Sample_##SUFFIX p = samples[s];                                                             \
            const T *v1 = image + p.pos1 + c0, *v2 = image + p.pos2 + c0;                                     \
            const T *v3 = image + p.pos3 + c0, *v4 = image + p.pos4 + c0;                                     \
            for (int c = 0; c < BLOCK; c++)                                                                   \
              acc[c] += p.w1 * v1[c] + p.w2 * v2[c] + p.w3 * v3[c] + p.w4 * v4[c];                            \
          }                                                                                                   \
          for (int c = 0; c < BLOCK; c++) out[(c0 + c) * bins] = acc[c] / count;                             \
        }                                                                                                     \
        for (; c0 < channels; c0++) {                                                                         \
          T acc = 0;                                                                                          \
          for (int64_t s = 0; s < per_bin; s++) {                                                             \
            const Sample_##SUFFIX p = samples[s];                                                             \
            acc += p.w1 * image[p.pos1 + c0] + p.w2 * image[p.pos2 + c0] + p.w3 * image[p.pos3 + c0]          \
                   + p.w4 * image[p.pos4 + c0];                                                               \
          }                                                                                                   \
          out[c0 * bins] = acc / count;                                                                       \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
    free(ys); free(xs);                                                                                       \
  }                                                                                                           \
  free(samples);                                                                                              \
  return 0;                                                                                                   \
}                                                                                                             \
                                                                                                              \
int roi_align_backward_##SUFFIX(const T *grad_output, const T *rois, int64_t count_rois, int64_t channels,     \
                                int64_t height, int64_t width, int ph_n, int pw_n, double spatial_scale,      \
                                int sampling_ratio, int aligned, T *grad_input) {                             \
  Sample_##SUFFIX *samples = NULL;                                                                            \
  int64_t capacity = 0;                                                                                       \
  const int64_t bins = (int64_t)ph_n * pw_n;                                                                  \
  T *g = malloc(sizeof(T) * (channels + 1));                                                                  \
  if (!g) return 1;                                                                                           \
  for (int64_t n = 0; n < count_rois; n++) {                                                                  \
    const T *roi = rois + n * 5;                                                                              \
    T *image = grad_input + (int64_t)roi[0] * height * width * channels;                                      \
    int grid_h, grid_w;                                                                                       \
    Axis_##SUFFIX *ys, *xs;                                                                                   \
    if (!geometry_##SUFFIX(roi, spatial_scale, ph_n, pw_n, sampling_ratio, aligned, height, width, &grid_h,   \
                           &grid_w, &ys, &xs, &samples, &capacity)) { free(samples); free(g); return 1; }     \
    const int64_t per_bin = (int64_t)grid_h * grid_w;                                                         \
    const T count = (T)per_bin; /* torchvision's backward divides by the product itself */                    \
    /* x / 2^k and x * 2^-k are the same number (both exact scalings, rounded alike): no division then */    \
    const int power_of_two = per_bin > 0 && (per_bin & (per_bin - 1)) == 0;                                   \
    const T inverse = power_of_two ? (T)1. / count : (T)0.;                                                   \
    const T *grad_roi = grad_output + n * channels * bins;                                                    \
    for (int ph = 0; ph < ph_n; ph++) {                                                                       \
      for (int pw = 0; pw < pw_n; pw++) {                                                                     \
        bin_samples_##SUFFIX(ys + ph * grid_h, xs + pw * grid_w, grid_h, grid_w, width, channels, samples);   \
        for (int64_t c = 0; c < channels; c++) g[c] = grad_roi[c * bins + ph * pw_n + pw];                    \
        for (int64_t s = 0; s < per_bin; s++) {                                                               \
          const Sample_##SUFFIX p = samples[s];                                                               \
          if (!p.valid) continue;                                                                             \
          T *a1 = image + p.pos1, *a2 = image + p.pos2, *a3 = image + p.pos3, *a4 = image + p.pos4;           \
          if (power_of_two) {                                                                                 \
            for (int64_t c = 0; c < channels; c++) {                                                          \
              T g1 = g[c] * p.w1 * inverse, g2 = g[c] * p.w2 * inverse;                                       \
              T g3 = g[c] * p.w3 * inverse, g4 = g[c] * p.w4 * inverse;                                       \
              a1[c] += g1; a2[c] += g2; a3[c] += g3; a4[c] += g4;                                             \
            }                                                                                                 \
          } else {                                                                                            \
            for (int64_t c = 0; c < channels; c++) {                                                          \
              T g1 = g[c] * p.w1 / count, g2 = g[c] * p.w2 / count;                                           \
              T g3 = g[c] * p.w3 / count, g4 = g[c] * p.w4 / count;                                           \
              a1[c] += g1; a2[c] += g2; a3[c] += g3; a4[c] += g4;                                             \
            }                                                                                                 \
          }                                                                                                   \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
    free(ys); free(xs);                                                                                       \
  }                                                                                                           \
  free(samples);                                                                                              \
  free(g);                                                                                                    \
  return 0;                                                                                                   \
}

DEFINE_ROI_ALIGN(float, f32)
DEFINE_ROI_ALIGN(double, f64)
