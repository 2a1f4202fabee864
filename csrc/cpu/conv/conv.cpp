// Convolution drivers on the GEMM engine (the maths and the matrix view: conv.h).
//
// Patch walking. Row p = (c, i, j) of an image's column matrix, restricted to the columns
// l in [l0, l0 + n), is a sequence of output-row segments (fixed oh); on each one the input
// row ih = oh*sh - pt + i*dh is either all padding or splits into three runs: left padding,
// the valid ow range [ow_lo, ow_hi) (iw = ow*sw - pl + j*dw in [0, W), computed once per
// row p) read with stride sw, right padding. walk_row hands these runs to a sink, so the
// same walk serves im2col (row-major), the forward's virtual B packer (panels of NR
// columns), the backward-weight's transposed packer (the row becomes a panel column), and
// col2im (scatter-add, padding runs skipped).
//
// Paths, chosen per direction (shift_fwd / shift_data / shift_weight): the shift packer
// (shift_pack.h: masked vector loads, per-panel tables; strided convolutions over the
// image's stride phases), the small-image path (batched images, table gathers, gather.h),
// pointwise (plain GEMM), depthwise (depthwise.h), and the walk_row packers above for
// what remains (outputs narrower than 8 pixels; strided backward-data).
//
// Threads: when the batch is large enough to split evenly over the threads, whole images
// run one per thread (the nested GEMMs run inline, single-threaded); otherwise images run
// one after another with the GEMM and col2im threaded inside. Either way the summation
// order depends only on the thread count (bitwise reproducible).
#include "cpu/conv/conv.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "core/errors.h"
#include "core/mempool.h"
#include "core/parallel.h"
#include "core/cpu_features.h"
#include "cpu/conv/depthwise.h"
#include "cpu/conv/gather.h"
#include "cpu/conv/shift_pack.h"
#include "cpu/conv/winograd.h"
#include "cpu/gemm/gemm.h"

namespace nnk {

namespace {

constexpr double kMinImageFlops = 64 * 4e6;  // below this, images run one per thread
constexpr index_t kColsChunkElems = index_t(1) << 18;  // backward-data column chunk (L2-sized)

// Workspaces come from the caching pool (large ones reuse pages already touched).
template <typename T>
PoolBuffer<T> alloc_buf(index_t n) { return pool_buffer<T>(n, "conv workspace"); }

// Walks row p (within one group: p = (c, i, j), c < Cg) over columns [l0, l0 + n).
// sink.zero(jj, len): columns jj.. are padding; sink.run(jj, off, stride, len): columns jj..
// read the channel plane at off, off + stride, ... (off relative to the channel's plane).
// Returns the channel c of row p.
template <class Sink>
inline index_t walk_row(const ConvGeom& g, index_t p, index_t l0, index_t n, Sink& sink) {
  const index_t khw = g.kh * g.kw;
  const index_t c = p / khw, r = p - c * khw, ki = r / g.kw, kj = r - ki * g.kw;
  const index_t off_w = kj * g.dw - g.pl;  // iw = ow * sw + off_w
  index_t ow_lo = off_w >= 0 ? 0 : ceil_div(-off_w, g.sw);
  index_t ow_hi = (g.W - off_w) <= 0 ? 0 : ceil_div(g.W - off_w, g.sw);
  ow_lo = std::min(ow_lo, g.Wo);
  ow_hi = std::max(ow_lo, std::min(ow_hi, g.Wo));
  const index_t Wo = g.Wo;
  index_t oh = Wo ? l0 / Wo : 0, ow = Wo ? l0 - oh * Wo : 0;
  index_t jj = 0;
  while (jj < n) {
    const index_t len = std::min(Wo - ow, n - jj);
    const index_t ih = oh * g.sh - g.pt + ki * g.dh;
    if (ih < 0 || ih >= g.H) {
      sink.zero(jj, len);
    } else {
      const index_t a = ow, e = ow + len;
      const index_t z1 = std::min(std::max(ow_lo, a), e), z2 = std::min(std::max(ow_hi, z1), e);
      if (z1 > a) sink.zero(jj, z1 - a);
      if (z2 > z1) sink.run(jj + (z1 - a), ih * g.W + z1 * g.sw + off_w, g.sw, z2 - z1);
      if (e > z2) sink.zero(jj + (z2 - a), e - z2);
    }
    jj += len;
    ow = 0;
    ++oh;
  }
  return c;
}

template <typename T>
inline void copy_run(T* __restrict d, const T* __restrict s, index_t stride, index_t len) {
  if (stride == 1) std::memcpy(d, s, size_t(len) * sizeof(T));
  else for (index_t t = 0; t < len; ++t) d[t] = s[t * stride];
}

// Row-major destination (im2col): d[jj].
template <typename T>
struct RowSink {
  T* d; const T* plane;
  void zero(index_t jj, index_t len) { std::memset(d + jj, 0, size_t(len) * sizeof(T)); }
  void run(index_t jj, index_t off, index_t stride, index_t len) { copy_run(d + jj, plane + off, stride, len); }
};

// One row of packed panels: column jj lands at d[(jj / NR) * pstride + jj % NR].
template <typename T>
struct PanelRowSink {
  T* d; const T* plane; index_t NR, pstride;
  void zero(index_t jj, index_t len) {
    while (len > 0) {
      const index_t lane = jj % NR, k = std::min(len, NR - lane);
      std::memset(d + (jj / NR) * pstride + lane, 0, size_t(k) * sizeof(T));
      jj += k; len -= k;
    }
  }
  void run(index_t jj, index_t off, index_t stride, index_t len) {
    const T* s = plane + off;
    while (len > 0) {
      const index_t lane = jj % NR, k = std::min(len, NR - lane);
      copy_run(d + (jj / NR) * pstride + lane, s, stride, k);
      jj += k; len -= k; s += k * stride;
    }
  }
};

// One column of a packed panel (transposed packing): row jj lands at d[jj * NR].
template <typename T>
struct PanelColSink {
  T* d; const T* plane; index_t NR;
  void zero(index_t jj, index_t len) { for (index_t t = 0; t < len; ++t) d[(jj + t) * NR] = T(0); }
  void run(index_t jj, index_t off, index_t stride, index_t len) {
    const T* s = plane + off;
    T* q = d + jj * NR;
    for (index_t t = 0; t < len; ++t) q[t * NR] = s[t * stride];
  }
};

// Scatter-add (col2im): plane[off + t*stride] += src[jj + t]; padding is dropped.
template <typename T>
struct AddSink {
  const T* src; T* plane;
  void zero(index_t, index_t) {}
  void run(index_t jj, index_t off, index_t stride, index_t len) {
    const T* s = src + jj;
    T* q = plane + off;
    if (stride == 1) for (index_t t = 0; t < len; ++t) q[t] += s[t];
    else for (index_t t = 0; t < len; ++t) q[t * stride] += s[t];
  }
};

// Virtual B of the forward: cols (Kg x L) of one image and group.
template <typename T>
struct FwdPackCtx { const ConvGeom* g; const T* x; };  // x: the group's first channel plane

template <typename T>
void pack_fwd(const void* vctx, void* vdst, index_t p0, index_t kc, index_t j0, index_t nc, index_t NR) {
  const auto& ctx = *static_cast<const FwdPackCtx<T>*>(vctx);
  const ConvGeom& g = *ctx.g;
  T* dst = static_cast<T*>(vdst);
  const index_t HW = g.H * g.W, pstride = kc * NR, tail = nc % NR;
  for (index_t p = p0; p < p0 + kc; ++p) {
    const index_t khw = g.kh * g.kw;
    PanelRowSink<T> s{dst + (p - p0) * NR, ctx.x + (p / khw) * HW, NR, pstride};
    walk_row(g, p, j0, nc, s);
    if (tail) std::memset(dst + (nc / NR) * pstride + (p - p0) * NR + tail, 0, size_t(NR - tail) * sizeof(T));
  }
}

// Virtual B of the forward through the vectorised packer (shift_pack.h). Stride 1: one
// plane per channel of the group, taps (i, j) shifted by (i*dh - pt, j*dw - pl). Stride
// (sh, sw) > 1: the image is first split into its sh*sw stride phases,
//   xs[c][a][b][u][v] = x[c, u*sh + a, v*sw + b]   (Hs x Ws = ceil(H/sh) x ceil(W/sw), zero past the image)
// and tap (i, j) reads phase (a, b) shifted by (qy, qx), where i*dh - pt = qy*sh + a and
// j*dw - pl = qx*sw + b (floor division): ih = oh*sh + i*dh - pt = (oh + qy)*sh + a.
struct ShiftTables {
  std::vector<index_t> toff, dy, dx;
  ShiftPack sp;
  ShiftPackFn fn;
  bool phased = false;
  index_t Hs = 0, Ws = 0, cstride = 0;  // phase planes (phased) or the image planes
};

ShiftPackFn shift_pack_trans_fn() {
#if defined(NNK_X86)
  if (current_isa() == Isa::avx512) return cpu::avx512::shift_pack_trans;
  if (current_isa() == Isa::avx2) return cpu::avx2::shift_pack_trans;
#endif
  return cpu::generic::shift_pack_trans;
}

ShiftPackFn shift_pack_fn() {
#if defined(NNK_X86)
  if (current_isa() == Isa::avx512) return cpu::avx512::shift_pack;
  if (current_isa() == Isa::avx2) return cpu::avx2::shift_pack;
#endif
  return cpu::generic::shift_pack;
}

inline index_t floor_div(index_t a, index_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

void shift_tables(const ConvGeom& g, ShiftTables& t) {
  const index_t khw = g.kh * g.kw;
  t.phased = g.sh > 1 || g.sw > 1;
  t.Hs = ceil_div(g.H, g.sh);
  t.Ws = ceil_div(g.W, g.sw);
  const index_t plane = t.Hs * t.Ws;
  t.cstride = g.sh * g.sw * plane;
  t.toff.resize(size_t(khw));
  t.dy.resize(size_t(khw));
  t.dx.resize(size_t(khw));
  for (index_t i = 0; i < g.kh; ++i)
    for (index_t j = 0; j < g.kw; ++j) {
      const index_t ey = i * g.dh - g.pt, ex = j * g.dw - g.pl;
      const index_t qy = floor_div(ey, g.sh), qx = floor_div(ex, g.sw);
      const index_t a = ey - qy * g.sh, b = ex - qx * g.sw;
      t.toff[size_t(i * g.kw + j)] = (a * g.sw + b) * plane;
      t.dy[size_t(i * g.kw + j)] = qy;
      t.dx[size_t(i * g.kw + j)] = qx;
    }
  t.sp = ShiftPack{nullptr, t.cstride, khw, t.toff.data(), t.dy.data(), t.dx.data(), t.Hs, t.Ws, g.Ho, g.Wo};
  t.fn = shift_pack_fn();
}

// xs (C planes of sh*sw phases, t's layout) from one image x (C, H, W).
template <typename T>
void split_phases(const ConvGeom& g, const ShiftTables& t, T* xs, const T* x) {
  const index_t plane = t.Hs * t.Ws;
  for (index_t c = 0; c < g.C; ++c)
    for (index_t a = 0; a < g.sh; ++a)
      for (index_t b = 0; b < g.sw; ++b) {
        T* d = xs + c * t.cstride + (a * g.sw + b) * plane;
        const T* src = x + c * g.H * g.W;
        for (index_t u = 0; u < t.Hs; ++u, d += t.Ws) {
          const index_t ih = u * g.sh + a;
          if (ih >= g.H) {
            std::fill(d, d + t.Ws, T(0));
            continue;
          }
          const T* r = src + ih * g.W + b;
          const index_t nv = b < g.W ? ceil_div(g.W - b, g.sw) : 0;
          for (index_t v = 0; v < nv; ++v) d[v] = r[v * g.sw];
          std::fill(d + nv, d + t.Ws, T(0));
        }
      }
}

struct ShiftCtx { DType dt; ShiftPackFn fn; ShiftPack sp; };

void pack_shift(const void* vctx, void* dst, index_t p0, index_t kc, index_t j0, index_t nc, index_t NR) {
  const auto& c = *static_cast<const ShiftCtx*>(vctx);
  c.fn(c.dt, c.sp, dst, p0, kc, j0, nc, NR);
}

// Virtual B of the backward-weight: cols^T over the whole batch, (N*L x Kg): row q = (n, l).
template <typename T>
struct WtPackCtx { const ConvGeom* g; const T* x; };  // x: image 0's group plane

template <typename T>
void pack_wt(const void* vctx, void* vdst, index_t p0, index_t kc, index_t j0, index_t nc, index_t NR) {
  const auto& ctx = *static_cast<const WtPackCtx<T>*>(vctx);
  const ConvGeom& g = *ctx.g;
  T* dst = static_cast<T*>(vdst);
  const index_t HW = g.H * g.W, L = g.L(), khw = g.kh * g.kw, pstride = kc * NR;
  for (index_t jj = 0; jj < round_up(nc, NR); ++jj) {
    T* d = dst + (jj / NR) * pstride + jj % NR;
    if (jj >= nc) {
      for (index_t q = 0; q < kc; ++q) d[q * NR] = T(0);
      continue;
    }
    const index_t j = j0 + jj, c = j / khw;
    index_t q = p0, done = 0;
    while (done < kc) {  // image segments of rows p0 .. p0 + kc
      const index_t n = q / L, l = q - n * L, len = std::min(L - l, kc - done);
      PanelColSink<T> s{d + done * NR, ctx.x + (n * g.C + c) * HW, NR};
      walk_row(g, j, l, len, s);
      done += len;
      q += len;
    }
  }
}

// Scatter-adds rows p of one image-group's column chunk (Kg x lc, columns l0..) into dx,
// for the channels [c0, c1) of the group.
template <typename T>
void col2im_rows(const ConvGeom& g, T* dxg, const T* cols, index_t ldc, index_t l0, index_t lc,
                 index_t c0, index_t c1) {
  const index_t khw = g.kh * g.kw, HW = g.H * g.W;
  for (index_t p = c0 * khw; p < c1 * khw; ++p) {
    AddSink<T> s{cols + p * ldc, dxg + (p / khw) * HW};
    walk_row(g, p, l0, lc, s);
  }
}

bool is_pointwise(const ConvGeom& g) {
  return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 &&
         g.Ho == g.H && g.Wo == g.W;
}

// Runs f(n) for every image: images spread over the threads when that splits evenly, else
// in order. Spread: one image per chunk of the pool, so that a worker that wakes late (a
// busy machine) still finds images to take rather than leaving them all to the caller.
template <class F>
void for_images(const ConvGeom& g, double flops_per_image, F&& f) {
  const index_t T = get_num_threads();
  const bool batch_par = g.N >= T && T > 1 &&
      (g.N % T == 0 || g.N >= 4 * T || flops_per_image < kMinImageFlops);
  if (batch_par) {
    parallel_run(g.N, [&](index_t n) { f(n); });
  } else {
    for (index_t n = 0; n < g.N; ++n) f(n);
  }
}

bool is_depthwise(const ConvGeom& g) { return g.groups == g.C && g.C > 1; }

// Winograd F(2x2, 3x3) (winograd.h): 3x3 kernels, stride 1, dilation 1, one group, with
// enough channels on both sides that the 16 products, not the transforms, set the time,
// and outputs of at least 2 x 2 (a 1-pixel side wastes half of every 2 x 2 tile, and the
// 2.25x saving with it). NNKERNELS_WINOGRAD=0 turns it off (the im2col paths then run
// these shapes).
constexpr index_t kWinoMinChannels = 16;
bool winograd_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("NNKERNELS_WINOGRAD");
    return !(e && e[0] == '0' && e[1] == 0);
  }();
  return on;
}
bool use_winograd(const ConvGeom& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1 &&
         g.C >= kWinoMinChannels && g.Cout >= kWinoMinChannels && g.Ho >= 2 && g.Wo >= 2 && winograd_enabled();
}
WinoGeom wino_forward_geom(const ConvGeom& g) {
  WinoGeom w;
  w.N = g.N; w.C = g.C; w.H = g.H; w.W = g.W;
  w.Cout = g.Cout; w.Ho = g.Ho; w.Wo = g.Wo;
  w.pt = g.pt; w.pl = g.pl;
  w.TH = ceil_div(g.Ho, 2); w.TW = ceil_div(g.Wo, 2);
  return w;
}
// Backward-data as a forward convolution of dY with the transposed, flipped kernel:
//   dx[c, ih, iw] = sum_{o, i, j} w[o, c, 2 - i, 2 - j] dy[o, ih - (2 - pt) + i, iw - (2 - pl) + j].
WinoGeom wino_data_geom(const ConvGeom& g) {
  WinoGeom w;
  w.N = g.N; w.C = g.Cout; w.H = g.Ho; w.W = g.Wo;
  w.Cout = g.C; w.Ho = g.H; w.Wo = g.W;
  w.pt = 2 - g.pt; w.pl = 2 - g.pl;
  w.TH = ceil_div(g.H, 2); w.TW = ceil_div(g.W, 2);
  return w;
}

// The shift packer's paths (any stride, through the stride phases when > 1; outputs at
// least kShiftMinWo wide, so that a panel's vectors meet few output rows).
constexpr index_t kShiftMinWo = 8;
bool use_shift(const ConvGeom& g) { return !is_pointwise(g) && !is_depthwise(g) && g.Wo >= kShiftMinWo; }

// Depthwise backward: input planes (data) and output channels (weight) split between
// threads; each is owned by one call, so any split gives the same bits.
void depthwise_bwd(DType dt, const ConvGeom& g, void* dx, void* dw, const void* dy, const void* x, const void* w) {
  auto fd = cpu::generic::depthwise_backward_data;
  auto fw = cpu::generic::depthwise_backward_weight;
#if defined(NNK_X86)
  if (current_isa() == Isa::avx512) { fd = cpu::avx512::depthwise_backward_data; fw = cpu::avx512::depthwise_backward_weight; }
  else if (current_isa() == Isa::avx2) { fd = cpu::avx2::depthwise_backward_data; fw = cpu::avx2::depthwise_backward_weight; }
#endif
  const index_t work = std::max<index_t>(g.L() * g.kh * g.kw, 1);
  if (dx) {
    const index_t mult = g.Cout / g.C;
    parallel_for(g.N * g.C, std::max<index_t>(1, 65536 / (work * mult)),
                 [&](index_t p0, index_t p1) { fd(dt, g, dx, dy, w, p0, p1); });
  }
  if (dw)
    parallel_for(g.Cout, std::max<index_t>(1, 65536 / (work * std::max<index_t>(g.N, 1))),
                 [&](index_t o0, index_t o1) { fw(dt, g, dw, dy, x, o0, o1); });
}

void depthwise(DType dt, const ConvGeom& g, void* y, const void* x, const void* w, const void* bias) {
  auto fn = cpu::generic::depthwise_forward;
#if defined(NNK_X86)
  if (current_isa() == Isa::avx512) fn = cpu::avx512::depthwise_forward;
  else if (current_isa() == Isa::avx2) fn = cpu::avx2::depthwise_forward;
#endif
  const index_t planes = g.N * g.Cout, L = g.L();
  const index_t grain = std::max<index_t>(1, 65536 / std::max<index_t>(L * g.kh * g.kw, 1));
  parallel_for(planes, grain, [&](index_t q0, index_t q1) { fn(dt, g, y, x, w, bias, q0, q1); });
}


// ---------------------------------------------------------------------------------------
// Small images: a chunk of images (the whole batch when it fits) is one GEMM whose columns
// are all the chunk's output pixels (n, oh, ow), so that the per-GEMM costs (packing set-up,
// thread start, partial micro-panels when L < NR) are paid once per chunk, not per image.
// The images are first copied into a zero-padded buffer xp (N, C, Hp, Wp) in which every
// patch element is at xp[tap(c, i, j) + pix(n, oh, ow)] with
//   tap = c*Hp*Wp + i*dh*Wp + j*dw,   pix = n*C*Hp*Wp + oh*sh*Wp + ow*sw,
// so packing (forward: rows = taps, columns = pixels; backward-weight: transposed) and
// col2im are branch-free table lookups (gather.h). The forward writes (Cout, nb*L) and
// copies it to NCHW; backward-data computes cols = W^T dY for the chunk (dY read through
// the same kind of table) and scatter-adds them into a padded dx, then crops.
// ---------------------------------------------------------------------------------------

constexpr index_t kSmallL = 256;                     // output pixels per image for the path
constexpr index_t kChunkElems = index_t(1) << 20;    // bound on each per-chunk buffer
constexpr index_t kMaxImageElems = index_t(1) << 24; // per-image bound (int32 tables)

struct SmallGeom {
  index_t Hp, Wp, HpWp;
  index_t nb;  // images per chunk
};

SmallGeom small_geom(const ConvGeom& g) {
  SmallGeom s;
  s.Hp = (g.Ho - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  s.Wp = (g.Wo - 1) * g.sw + (g.kw - 1) * g.dw + 1;
  s.HpWp = s.Hp * s.Wp;
  const index_t L = g.L();
  const index_t per = std::max({g.C * s.HpWp, g.Cout * L, g.Kg() * L, index_t(1)});
  s.nb = std::max<index_t>(1, std::min<index_t>(g.N, kChunkElems / per));
  return s;
}

bool use_small(const ConvGeom& g) {
  if (g.N < 2 || g.L() == 0 || g.L() > kSmallL || g.Cout == 0 || g.C == 0) return false;
  const index_t Hp = (g.Ho - 1) * g.sh + (g.kh - 1) * g.dh + 1, Wp = (g.Wo - 1) * g.sw + (g.kw - 1) * g.dw + 1;
  if (Hp > kMaxImageElems || Wp > kMaxImageElems) return false;
  const double img = double(Hp) * double(Wp) * double(g.C);
  return img <= double(kMaxImageElems) && double(g.Cout) * double(g.L()) <= double(kMaxImageElems) &&
         double(g.Kg()) * double(g.L()) <= double(kMaxImageElems);
}

// Which path: the shift packer is preferred to the small-image path (batched images) from
// kShiftMinL output pixels per image (4 panels of 32; measured on 16 x 64 x 14 x 14 -> 64:
// 200 against 150 GFLOP/s forward). Backward-data by the shift packer packs Coutg*kh*kw
// rows per pixel for Cg rows of output; the column-matrix route (GEMM + col2im) moves
// Cg*kh*kw rows per pixel instead and wins when Cg is much smaller than Coutg (measured:
// C = 3 -> Cout = 32 on 32 x 32 images: 44 against 118 GFLOP/s).
constexpr index_t kShiftMinL = 128;
bool shift_fwd(const ConvGeom& g) { return use_shift(g) && (g.L() >= kShiftMinL || !use_small(g)); }
bool shift_weight(const ConvGeom& g) { return shift_fwd(g); }
bool shift_data(const ConvGeom& g) {
  return shift_fwd(g) && g.sh == 1 && g.sw == 1 && g.W >= kShiftMinWo && g.Cg() >= 8 && 4 * g.Cg() >= g.Coutg();
}

using GatherFn = void (*)(DType, void*, const void*, const int32_t*, index_t, const int32_t*, index_t, index_t);
using ScatterFn = void (*)(DType, void*, const int32_t*, index_t, const int32_t*, index_t, const void*, index_t);

GatherFn gather_fn() {
#if defined(NNK_X86)
  if (current_isa() == Isa::avx512) return cpu::avx512::gather_pack;
  if (current_isa() == Isa::avx2) return cpu::avx2::gather_pack;
#endif
  return cpu::generic::gather_pack;
}
ScatterFn scatter_fn() {
#if defined(NNK_X86)
  if (current_isa() == Isa::avx512) return cpu::avx512::scatter_add;
  if (current_isa() == Isa::avx2) return cpu::avx2::scatter_add;
#endif
  return cpu::generic::scatter_add;
}

// Virtual B that is a table gather: B[p, j] = base[rows[p] + cols[j]].
struct GatherB {
  DType dt;
  GatherFn fn;
  const void* base;
  const int32_t* rows;
  const int32_t* cols;
};

void pack_gather(const void* vctx, void* dst, index_t p0, index_t kc, index_t j0, index_t nc, index_t NR) {
  const auto& c = *static_cast<const GatherB*>(vctx);
  c.fn(c.dt, dst, c.base, c.rows + p0, kc, c.cols + j0, nc, NR);
}

// Tables: taps (Kg entries, within a group: channel c < Cg) and pixels (nb*L entries,
// image n relative to the chunk) over a plane of Hp x Wp and an image of `img` elements.
void tap_table(const ConvGeom& g, const SmallGeom& s, int32_t* t) {
  index_t p = 0;
  for (index_t c = 0; c < g.Cg(); ++c)
    for (index_t i = 0; i < g.kh; ++i)
      for (index_t j = 0; j < g.kw; ++j) t[p++] = int32_t(c * s.HpWp + i * g.dh * s.Wp + j * g.dw);
}
void pixel_table(const ConvGeom& g, index_t nb, index_t img, index_t row_step, index_t col_step, index_t Wrow,
                 int32_t* t) {
  index_t q = 0;
  for (index_t n = 0; n < nb; ++n)
    for (index_t oh = 0; oh < g.Ho; ++oh)
      for (index_t ow = 0; ow < g.Wo; ++ow) t[q++] = int32_t(n * img + oh * row_step * Wrow + ow * col_step);
}

// xp (nb, C, Hp, Wp) = zero-padded copy of images n0 .. n0 + nb of x (N, C, H, W).
template <typename T>
void pad_images(const ConvGeom& g, const SmallGeom& s, T* xp, const T* x, index_t n0, index_t nb) {
  const index_t HW = g.H * g.W;
  parallel_for(nb * g.C, std::max<index_t>(1, 16384 / s.HpWp), [&](index_t q0, index_t q1) {
    for (index_t q = q0; q < q1; ++q) {
      const T* src = x + (n0 * g.C + q) * HW;
      T* d = xp + q * s.HpWp;
      const index_t s0 = std::min(std::max<index_t>(g.pl, 0), s.Wp);
      const index_t s1 = std::max(s0, std::min(g.pl + g.W, s.Wp));
      // Plain loops: the rows are short (small images), library calls would dominate.
      for (index_t r = 0; r < s.Hp; ++r, d += s.Wp) {
        const index_t ih = r - g.pt;
        if (ih < 0 || ih >= g.H) {
          for (index_t t = 0; t < s.Wp; ++t) d[t] = T(0);
          continue;
        }
        const T* sr = src + ih * g.W + (s0 - g.pl);
        for (index_t t = 0; t < s0; ++t) d[t] = T(0);
        for (index_t t = s0; t < s1; ++t) d[t] = sr[t - s0];
        for (index_t t = s1; t < s.Wp; ++t) d[t] = T(0);
      }
    }
  });
}

template <typename T>
void forward_small(const ConvGeom& g, T* y, const T* x, const T* w, const T* bias) {
  const SmallGeom s = small_geom(g);
  const index_t L = g.L(), Kg = g.Kg(), Coutg = g.Coutg(), Cg = g.Cg();
  auto xp = alloc_buf<T>(s.nb * g.C * s.HpWp);
  auto yb = alloc_buf<T>(g.Cout * s.nb * L);
  std::vector<int32_t> taps(static_cast<size_t>(Kg)), pix(static_cast<size_t>(s.nb * L));
  tap_table(g, s, taps.data());
  pixel_table(g, s.nb, g.C * s.HpWp, g.sh, g.sw, s.Wp, pix.data());
  const GatherFn fn = gather_fn();
  for (index_t n0 = 0; n0 < g.N; n0 += s.nb) {
    const index_t nb = std::min(s.nb, g.N - n0), cols = nb * L;
    pad_images(g, s, xp.get(), x, n0, nb);
    for (index_t gr = 0; gr < g.groups; ++gr) {
      GatherB ctx{dtype_of<T>::value, fn, xp.get() + gr * Cg * s.HpWp, taps.data(), pix.data()};
      VirtualB vb{pack_gather, &ctx};
      GemmArgs a;
      a.dtype = dtype_of<T>::value;
      a.M = Coutg; a.N = cols; a.K = Kg;
      a.a = w + gr * Coutg * Kg; a.rs_a = Kg; a.cs_a = 1;
      a.c = yb.get() + gr * Coutg * cols; a.rs_c = cols; a.cs_c = 1;
      a.beta = 0.0;
      a.bias_m = bias ? bias + gr * Coutg : nullptr;
      a.virtual_b = &vb;
      gemm(a);
    }
    const T* src = yb.get();
    parallel_for(nb * g.Cout, std::max<index_t>(1, 4096 / L), [&](index_t q0, index_t q1) {
      for (index_t q = q0; q < q1; ++q) {  // q = n * Cout + o
        const index_t n = q / g.Cout, o = q - n * g.Cout;
        std::memcpy(y + (n0 * g.Cout + q) * L, src + o * cols + n * L, size_t(L) * sizeof(T));
      }
    });
  }
}

// dY as one (Cout x N*L) matrix (row o: image 0's plane o, image 1's, ...), so that a
// chunk of images is a column block of it.
template <typename T>
PoolBuffer<T> transpose_dy(const ConvGeom& g, const T* dy) {
  const index_t L = g.L(), NL = g.N * L;
  auto buf = alloc_buf<T>(g.Cout * NL);
  T* b = buf.get();
  parallel_for(g.Cout, 1, [&](index_t o0, index_t o1) {
    for (index_t o = o0; o < o1; ++o)
      for (index_t n = 0; n < g.N; ++n)
        std::memcpy(b + o * NL + n * L, dy + (n * g.Cout + o) * L, size_t(L) * sizeof(T));
  });
  return buf;
}

// dyt: dY as (Cout x N*L) (transpose_dy).
template <typename T>
void backward_data_small(const ConvGeom& g, T* dx, const T* dyt, const T* w) {
  const SmallGeom s = small_geom(g);
  const index_t L = g.L(), Kg = g.Kg(), Coutg = g.Coutg(), Cg = g.Cg(), HW = g.H * g.W, khw = g.kh * g.kw;
  const index_t NL = g.N * L;
  auto xp = alloc_buf<T>(s.nb * g.C * s.HpWp);
  auto cb = alloc_buf<T>(Kg * s.nb * L);
  std::vector<int32_t> taps(static_cast<size_t>(Kg)), pix(static_cast<size_t>(s.nb * L));
  tap_table(g, s, taps.data());
  pixel_table(g, s.nb, g.C * s.HpWp, g.sh, g.sw, s.Wp, pix.data());
  const ScatterFn sc = scatter_fn();
  for (index_t n0 = 0; n0 < g.N; n0 += s.nb) {
    const index_t nb = std::min(s.nb, g.N - n0), cols = nb * L;
    T* xpb = xp.get();
    std::memset(xpb, 0, size_t(nb * g.C * s.HpWp) * sizeof(T));
    for (index_t gr = 0; gr < g.groups; ++gr) {
      GemmArgs a;
      a.dtype = dtype_of<T>::value;
      a.M = Kg; a.N = cols; a.K = Coutg;
      a.a = w + gr * Coutg * Kg; a.rs_a = 1; a.cs_a = Kg;
      a.b = dyt + gr * Coutg * NL + n0 * L; a.rs_b = NL; a.cs_b = 1;
      a.c = cb.get(); a.rs_c = cols; a.cs_c = 1;
      a.beta = 0.0;
      gemm(a);
      // col2im: unit u = c * nb + n scatters channel c of image n (disjoint planes).
      T* base = xpb + gr * Cg * s.HpWp;
      const T* cbp = cb.get();
      parallel_for(Cg * nb, std::max<index_t>(1, 2048 / (khw * L)), [&](index_t u0, index_t u1) {
        while (u0 < u1) {
          const index_t c = u0 / nb, n = u0 - c * nb, ne = std::min(nb, n + (u1 - u0));
          sc(dtype_of<T>::value, base, taps.data() + c * khw, khw, pix.data() + n * L, (ne - n) * L,
             cbp + c * khw * cols + n * L, cols);
          u0 += ne - n;
        }
      });
    }
    // Crop the padded gradient into dx.
    parallel_for(nb * g.C, std::max<index_t>(1, 16384 / std::max<index_t>(HW, 1)), [&](index_t q0, index_t q1) {
      for (index_t q = q0; q < q1; ++q) {
        T* d = dx + (n0 * g.C + q) * HW;
        const T* src = xpb + q * s.HpWp;
        for (index_t h = 0; h < g.H; ++h) {
          const index_t r = h + g.pt;
          T* dr = d + h * g.W;
          if (r < 0 || r >= s.Hp) {
            std::memset(dr, 0, size_t(g.W) * sizeof(T));
            continue;
          }
          for (index_t ww = 0; ww < g.W; ++ww) {
            const index_t c = ww + g.pl;
            dr[ww] = (c >= 0 && c < s.Wp) ? src[r * s.Wp + c] : T(0);
          }
        }
      }
    });
  }
}

// dW_g += dY_g (Coutg x nb*L, rows of dyt) @ cols_g^T, chunk by chunk (beta = 1 after the first).
template <typename T>
void backward_weight_small(const ConvGeom& g, T* dw, const T* dyt, index_t NL, const T* x) {
  const SmallGeom s = small_geom(g);
  const index_t L = g.L(), Kg = g.Kg(), Coutg = g.Coutg(), Cg = g.Cg();
  auto xp = alloc_buf<T>(s.nb * g.C * s.HpWp);
  std::vector<int32_t> taps(static_cast<size_t>(Kg)), pix(static_cast<size_t>(s.nb * L));
  tap_table(g, s, taps.data());
  pixel_table(g, s.nb, g.C * s.HpWp, g.sh, g.sw, s.Wp, pix.data());
  const GatherFn fn = gather_fn();
  for (index_t n0 = 0; n0 < g.N; n0 += s.nb) {
    const index_t nb = std::min(s.nb, g.N - n0);
    pad_images(g, s, xp.get(), x, n0, nb);
    for (index_t gr = 0; gr < g.groups; ++gr) {
      // B (nb*L x Kg): rows are pixels, columns taps.
      GatherB ctx{dtype_of<T>::value, fn, xp.get() + gr * Cg * s.HpWp, pix.data(), taps.data()};
      VirtualB vb{pack_gather, &ctx};
      GemmArgs a;
      a.dtype = dtype_of<T>::value;
      a.M = Coutg; a.N = Kg; a.K = nb * L;
      a.a = dyt + gr * Coutg * NL + n0 * L; a.rs_a = NL; a.cs_a = 1;
      a.c = dw + gr * Coutg * Kg; a.rs_c = Kg; a.cs_c = 1;
      a.beta = n0 == 0 ? 0.0 : 1.0;
      a.virtual_b = &vb;
      gemm(a);
    }
  }
}

// Shift path, small output planes: nb images side by side in one GEMM (columns n*L + l,
// ShiftPack::istride), so that the last, partial micro-panel of each plane (L = 14*14 =
// 6 panels of 32 and 4 columns) is paid once per nb images; the GEMM writes a (rows x nb*L)
// buffer that is then copied out. nb divides each thread's even share of the batch (the
// threads take whole chunks), reaches kBatchCols columns if it can, and keeps the buffer
// under kBatchElems elements; 1 when the planes are large or the batch does not split evenly.
constexpr index_t kBatchCols = 1024;
constexpr index_t kBatchElems = index_t(1) << 18;  // ~1 MiB (f32): keeps the forward's extra memory low
index_t shift_batch(const ConvGeom& g, index_t cols, index_t rows) {
  const index_t T = get_num_threads();
  if (cols >= kBatchCols || g.N < 2 || (T > 1 && g.N % T != 0)) return 1;
  const index_t share = T > 1 ? g.N / T : g.N;
  index_t best = 1;
  for (index_t nb = 2; nb <= share; ++nb) {
    if (share % nb) continue;
    if (double(rows) * double(nb) * double(cols) > double(kBatchElems)) break;
    best = nb;
    if (nb * cols >= kBatchCols) break;
  }
  return best;
}

// Runs chunk(i) for the N / nb chunks of images: over the threads (one chunk per pool
// chunk; each thread's share is whole chunks) or in order with one thread.
template <class F>
void for_chunks(index_t nchunks, F&& chunk) {
  if (get_num_threads() > 1) parallel_run(nchunks, [&](index_t i) { chunk(i); });
  else for (index_t i = 0; i < nchunks; ++i) chunk(i);
}

// out[n0 + i, r, :] = buf[r, i*P : (i+1)*P] for i < nb, r < rows (buf: rows x nb*P).
template <typename T>
void scatter_images(T* out, const T* buf, index_t n0, index_t nb, index_t rows, index_t P) {
  for (index_t i = 0; i < nb; ++i)
    for (index_t r = 0; r < rows; ++r)
      std::memcpy(out + ((n0 + i) * rows + r) * P, buf + r * nb * P + i * P, size_t(P) * sizeof(T));
}

template <typename T>
void forward_t(const ConvGeom& g, T* y, const T* x, const T* w, const T* bias) {
  const index_t L = g.L(), Kg = g.Kg(), Coutg = g.Coutg(), Cg = g.Cg(), HW = g.H * g.W;
  if (g.N == 0 || L == 0 || g.Cout == 0) return;
  if (is_depthwise(g)) {
    depthwise(dtype_of<T>::value, g, y, x, w, bias);
    return;
  }
  if (use_winograd(g) && winograd_conv3x3(dtype_of<T>::value, wino_forward_geom(g), y, x, w, false, bias))
    return;  // (false: an infinite or NaN output; recomputed below, as torch would give it)
  if (use_small(g) && !shift_fwd(g)) {
    forward_small(g, y, x, w, bias);
    return;
  }
  const bool pw = is_pointwise(g);
  const bool shift = shift_fwd(g);
  ShiftTables st;
  if (shift) shift_tables(g, st);
  // The shift path packs the weight once for all images (in its K blocks).
  std::vector<PackedMatrix> wp;
  if (shift)
    for (index_t gr = 0; gr < g.groups; ++gr)
      wp.push_back(pack_a(dtype_of<T>::value, Coutg, Kg, w + gr * Coutg * Kg, Kg, 1,
                          gemm_virtual_b_kc(dtype_of<T>::value, Kg)));
  const index_t nb = shift ? shift_batch(g, L, g.Cout) : 1;
  if (nb > 1) {
    const index_t cs = st.phased ? st.cstride : HW, is = g.C * cs;  // channel / image strides of the input
    for_chunks(g.N / nb, [&](index_t ci) {
      const index_t n0 = ci * nb, cols = nb * L;
      auto yb = alloc_buf<T>(g.Cout * cols);
      PoolBuffer<T> xs;  // the images' stride phases
      const T* xin = x + n0 * g.C * HW;
      if (st.phased) {
        xs = alloc_buf<T>(checked_mul(nb, is, "conv2d"));
        for (index_t i = 0; i < nb; ++i) split_phases(g, st, xs.get() + i * is, x + (n0 + i) * g.C * HW);
        xin = xs.get();
      }
      for (index_t gr = 0; gr < g.groups; ++gr) {
        GemmArgs a;
        a.dtype = dtype_of<T>::value;
        a.M = Coutg; a.N = cols; a.K = Kg;
        a.packed_a = &wp[size_t(gr)];
        a.c = yb.get() + gr * Coutg * cols; a.rs_c = cols; a.cs_c = 1;
        a.beta = 0.0;
        a.bias_m = bias ? bias + gr * Coutg : nullptr;
        ShiftCtx sctx{dtype_of<T>::value, st.fn, st.sp};
        sctx.sp.base = xin + gr * Cg * cs;
        sctx.sp.istride = is;
        VirtualB vbs{pack_shift, &sctx, true};
        a.virtual_b = &vbs;
        gemm(a);
      }
      scatter_images(y, yb.get(), n0, nb, g.Cout, L);
    });
    return;
  }
  const double flops = 2.0 * double(g.Cout) * double(L) * double(std::max<index_t>(Kg, 1));
  for_images(g, flops, [&](index_t n) {
    PoolBuffer<T> xs;  // the image's stride phases
    if (shift && st.phased) {
      xs = alloc_buf<T>(checked_mul(g.C, st.cstride, "conv2d"));
      split_phases(g, st, xs.get(), x + n * g.C * HW);
    }
    for (index_t gr = 0; gr < g.groups; ++gr) {
      GemmArgs a;
      a.dtype = dtype_of<T>::value;
      a.M = Coutg; a.N = L; a.K = Kg;
      a.a = w + gr * Coutg * Kg; a.rs_a = Kg; a.cs_a = 1;
      a.c = y + (n * g.Cout + gr * Coutg) * L; a.rs_c = L; a.cs_c = 1;
      a.beta = 0.0;
      a.bias_m = bias ? bias + gr * Coutg : nullptr;
      const T* xg = x + (n * g.C + gr * Cg) * HW;
      FwdPackCtx<T> ctx{&g, xg};
      VirtualB vb{pack_fwd<T>, &ctx};
      ShiftCtx sctx{dtype_of<T>::value, st.fn, st.sp};
      sctx.sp.base = xs ? xs.get() + gr * Cg * st.cstride : xg;
      VirtualB vbs{pack_shift, &sctx, true};
      if (pw) { a.b = xg; a.rs_b = HW; a.cs_b = 1; }
      else a.virtual_b = shift ? &vbs : &vb;
      if (shift) a.packed_a = &wp[size_t(gr)];
      gemm(a);
    }
  });
}

// Stride-1 backward-data as a forward convolution of dY through the shift packer:
//   dx[n, gr*Cg + c, ih, iw] = sum_{o < Coutg, i, j} w[gr*Coutg + o, c, i, j]
//                                  * dy[n, gr*Coutg + o, ih + pt - i*dh, iw + pl - j*dw]
// (dy zero outside its Ho x Wo plane). Per image and group, dX_g (Cg x H*W) = Wt_g B with
// Wt_g[c, o*khw + t] = w[gr*Coutg + o, c, t] (a transposed copy of the weight, made once)
// and B's row (o, t) the plane dy[o] shifted by (pt - i*dh, pl - j*dw): no column matrix,
// no col2im.
template <typename T>
void backward_data_shift(const ConvGeom& g, T* dx, const T* dy, const T* w) {
  const index_t khw = g.kh * g.kw, Cg = g.Cg(), Coutg = g.Coutg(), HW = g.H * g.W, L = g.L(), Kt = Coutg * khw;
  auto wt = alloc_buf<T>(checked_mul(g.C, Kt, "conv2d_backward"));
  T* wtp = wt.get();
  for (index_t gr = 0; gr < g.groups; ++gr)
    for (index_t c = 0; c < Cg; ++c)
      for (index_t o = 0; o < Coutg; ++o)
        for (index_t t = 0; t < khw; ++t)
          wtp[(gr * Cg + c) * Kt + o * khw + t] = w[((gr * Coutg + o) * Cg + c) * khw + t];
  std::vector<index_t> toff(size_t(khw), 0), sdy(size_t(khw), 0), sdx(size_t(khw), 0);
  for (index_t i = 0; i < g.kh; ++i)
    for (index_t j = 0; j < g.kw; ++j) {
      sdy[size_t(i * g.kw + j)] = g.pt - i * g.dh;
      sdx[size_t(i * g.kw + j)] = g.pl - j * g.dw;
    }
  const ShiftPack sp{nullptr, L, khw, toff.data(), sdy.data(), sdx.data(), g.Ho, g.Wo, g.H, g.W};
  const ShiftPackFn fn = shift_pack_fn();
  std::vector<PackedMatrix> wp;  // Wt packed once for all images
  for (index_t gr = 0; gr < g.groups; ++gr)
    wp.push_back(pack_a(dtype_of<T>::value, Cg, Kt, wtp + gr * Cg * Kt, Kt, 1, gemm_virtual_b_kc(dtype_of<T>::value, Kt)));
  const index_t nb = shift_batch(g, HW, g.C);
  if (nb > 1) {
    for_chunks(g.N / nb, [&](index_t ci) {
      const index_t n0 = ci * nb, cols = nb * HW;
      auto xb = alloc_buf<T>(g.C * cols);
      for (index_t gr = 0; gr < g.groups; ++gr) {
        GemmArgs a;
        a.dtype = dtype_of<T>::value;
        a.M = Cg; a.N = cols; a.K = Kt;
        a.packed_a = &wp[size_t(gr)];
        a.c = xb.get() + gr * Cg * cols; a.rs_c = cols; a.cs_c = 1;
        a.beta = 0.0;
        ShiftCtx sctx{dtype_of<T>::value, fn, sp};
        sctx.sp.base = dy + (n0 * g.Cout + gr * Coutg) * L;
        sctx.sp.istride = g.Cout * L;
        VirtualB vb{pack_shift, &sctx, true};
        a.virtual_b = &vb;
        gemm(a);
      }
      scatter_images(dx, xb.get(), n0, nb, g.C, HW);
    });
    return;
  }
  const double flops = 2.0 * double(g.C) * double(HW) * double(Kt);
  for_images(g, flops, [&](index_t n) {
    for (index_t gr = 0; gr < g.groups; ++gr) {
      GemmArgs a;
      a.dtype = dtype_of<T>::value;
      a.M = Cg; a.N = HW; a.K = Kt;
      a.a = wtp + gr * Cg * Kt; a.rs_a = Kt; a.cs_a = 1;
      a.c = dx + (n * g.C + gr * Cg) * HW; a.rs_c = HW; a.cs_c = 1;
      a.beta = 0.0;
      a.packed_a = &wp[size_t(gr)];
      ShiftCtx sctx{dtype_of<T>::value, fn, sp};
      sctx.sp.base = dy + (n * g.Cout + gr * Coutg) * L;
      VirtualB vb{pack_shift, &sctx, true};
      a.virtual_b = &vb;
      gemm(a);
    }
  });
}

template <typename T>
void backward_data_t(const ConvGeom& g, T* dx, const T* dy, const T* w) {
  const index_t L = g.L(), Kg = g.Kg(), Coutg = g.Coutg(), Cg = g.Cg(), HW = g.H * g.W;
  if (g.N == 0 || g.C == 0) return;
  if (is_depthwise(g)) {
    depthwise_bwd(dtype_of<T>::value, g, dx, nullptr, dy, nullptr, w);
    return;
  }
  const bool pw = is_pointwise(g);
  if (L == 0 || g.Cout == 0) {
    std::memset(dx, 0, size_t(g.N * g.C * HW) * sizeof(T));
    return;
  }
  if (use_winograd(g) && winograd_conv3x3(dtype_of<T>::value, wino_data_geom(g), dx, dy, w, true, nullptr))
    return;  // (false: non-finite values, recomputed below)
  if (shift_data(g)) {
    backward_data_shift(g, dx, dy, w);
    return;
  }
  if (use_small(g)) {
    backward_data_small(g, dx, transpose_dy(g, dy).get(), w);
    return;
  }
  const index_t lc_max = std::max<index_t>(std::min<index_t>(L, 64), std::min<index_t>(L, kColsChunkElems / std::max<index_t>(Kg, 1)));
  const double flops = 2.0 * double(g.Cout) * double(L) * double(Kg);
  const index_t T_ = get_num_threads();
  const bool batch_par = g.N >= T_ && T_ > 1 && (g.N % T_ == 0 || g.N >= 4 * T_ || flops < kMinImageFlops);
  const index_t nbuf = pw ? 0 : (batch_par ? T_ : 1);
  std::vector<PoolBuffer<T>> bufs;
  for (index_t i = 0; i < nbuf; ++i) bufs.push_back(alloc_buf<T>(Kg * lc_max));
  auto image = [&](index_t n, T* cols, bool inner_par) {
    T* dxn = dx + n * g.C * HW;
    if (!pw) std::memset(dxn, 0, size_t(g.C * HW) * sizeof(T));
    for (index_t gr = 0; gr < g.groups; ++gr) {
      GemmArgs a;
      a.dtype = dtype_of<T>::value;
      a.M = Kg; a.K = Coutg;
      a.a = w + gr * Coutg * Kg; a.rs_a = 1; a.cs_a = Kg;
      a.beta = 0.0;
      const T* dyg = dy + (n * g.Cout + gr * Coutg) * L;
      T* dxg = dxn + gr * Cg * HW;
      if (pw) {
        a.N = L; a.b = dyg; a.rs_b = L; a.cs_b = 1;
        a.c = dxg; a.rs_c = L;
        gemm(a);
        continue;
      }
      for (index_t l0 = 0; l0 < L; l0 += lc_max) {
        const index_t lc = std::min(lc_max, L - l0);
        a.N = lc; a.b = dyg + l0; a.rs_b = L; a.cs_b = 1;
        a.c = cols; a.rs_c = lc;
        gemm(a);
        if (inner_par)
          parallel_for(Cg, 1, [&](index_t c0, index_t c1) { col2im_rows(g, dxg, cols, lc, l0, lc, c0, c1); });
        else
          col2im_rows(g, dxg, cols, lc, l0, lc, 0, Cg);
      }
    }
  };
  if (batch_par) {
    parallel_run(T_, [&](index_t t) {
      const index_t b = g.N * t / T_, e = g.N * (t + 1) / T_;
      for (index_t n = b; n < e; ++n) image(n, pw ? nullptr : bufs[t].get(), false);
    });
  } else {
    for (index_t n = 0; n < g.N; ++n) image(n, pw ? nullptr : bufs[0].get(), true);
  }
}

constexpr index_t kWeightPartsPerThread = 2;  // partial sums per thread (a late worker still finds one)

// Backward-weight through the transposed shift packer (strided: over each image's phases):
//   dW_g (Coutg x Kg) = sum_n dY_g[n] (Coutg x L) @ B_n^T   (B_n: the forward's virtual B of image n)
// one GEMM per image and group accumulating into dW (beta = 1 after the first image). With
// T > 1 threads, the images are cut into P = min(2T, N) parts, part t = [N t / P, N (t+1) / P)
// summed into its own partial (part 0's is dW), and the partials are added in part order
// (the parts depend on T only: bitwise reproducible).
template <typename T>
void backward_weight_shift(const ConvGeom& g, T* dw, const T* dy, const T* x) {
  const index_t L = g.L(), Kg = g.Kg(), Coutg = g.Coutg(), Cg = g.Cg(), HW = g.H * g.W;
  const index_t DW = g.Cout * Kg;
  ShiftTables st;
  shift_tables(g, st);
  st.fn = shift_pack_trans_fn();
  auto images = [&](T* acc, index_t n0, index_t n1) {
    PoolBuffer<T> xs;  // the image's stride phases
    if (st.phased) xs = alloc_buf<T>(checked_mul(g.C, st.cstride, "conv2d_backward"));
    for (index_t n = n0; n < n1; ++n) {
      if (xs) split_phases(g, st, xs.get(), x + n * g.C * HW);
      for (index_t gr = 0; gr < g.groups; ++gr) {
        GemmArgs a;
        a.dtype = dtype_of<T>::value;
        a.M = Coutg; a.N = Kg; a.K = L;
        a.a = dy + (n * g.Cout + gr * Coutg) * L; a.rs_a = L; a.cs_a = 1;
        a.c = acc + gr * Coutg * Kg; a.rs_c = Kg; a.cs_c = 1;
        a.beta = n == n0 ? 0.0 : 1.0;
        ShiftCtx sctx{dtype_of<T>::value, st.fn, st.sp};
        sctx.sp.base = xs ? xs.get() + gr * Cg * st.cstride : x + (n * g.C + gr * Cg) * HW;
        VirtualB vb{pack_shift, &sctx, true};
        a.virtual_b = &vb;
        gemm(a);
      }
    }
  };
  const index_t threads = get_num_threads();
  const index_t nt = threads <= 1 ? 1 : std::min<index_t>(kWeightPartsPerThread * threads, g.N);
  if (nt <= 1) {
    images(dw, 0, g.N);
    return;
  }
  auto part = alloc_buf<T>(checked_mul(nt - 1, DW, "conv2d_backward"));
  parallel_run(nt, [&](index_t t) {
    images(t == 0 ? dw : part.get() + (t - 1) * DW, g.N * t / nt, g.N * (t + 1) / nt);
  });
  parallel_for(DW, 4096, [&](index_t i0, index_t i1) {
    for (index_t t = 1; t < nt; ++t) {
      const T* pp = part.get() + (t - 1) * DW;
      for (index_t i = i0; i < i1; ++i) dw[i] += pp[i];
    }
  });
}

template <typename T>
void backward_weight_t(const ConvGeom& g, T* dw, const T* dy, const T* x) {
  const index_t L = g.L(), Kg = g.Kg(), Coutg = g.Coutg(), Cg = g.Cg(), HW = g.H * g.W;
  if (g.Cout == 0 || Kg == 0) return;
  if (is_depthwise(g)) {
    depthwise_bwd(dtype_of<T>::value, g, nullptr, dw, dy, x, nullptr);
    return;
  }
  const index_t NL = checked_mul(g.N, L, "conv2d_backward");
  if (L > 0 && g.N > 0 && use_winograd(g) && winograd_conv3x3_weight(dtype_of<T>::value, wino_forward_geom(g), dw, dy, x))
    return;  // (false: non-finite values, recomputed below)
  if (L > 0 && g.N > 0 && shift_weight(g)) {
    backward_weight_shift(g, dw, dy, x);
    return;
  }
  // dy as one (Cout x N*L) matrix, so that the whole batch is one GEMM with K = N*L.
  const T* dyt = dy;
  PoolBuffer<T> buf;
  if (g.N > 1 && L > 0) {
    buf = transpose_dy(g, dy);
    dyt = buf.get();
  }
  if (L > 0 && use_small(g)) {
    backward_weight_small(g, dw, dyt, NL, x);
    return;
  }
  const bool pw = is_pointwise(g) && g.N == 1;
  for (index_t gr = 0; gr < g.groups; ++gr) {
    GemmArgs a;
    a.dtype = dtype_of<T>::value;
    a.M = Coutg; a.N = Kg; a.K = NL;
    a.a = dyt + gr * Coutg * NL; a.rs_a = NL; a.cs_a = 1;
    a.c = dw + gr * Coutg * Kg; a.rs_c = Kg; a.cs_c = 1;
    a.beta = 0.0;
    WtPackCtx<T> ctx{&g, x + gr * Cg * HW};
    VirtualB vb{pack_wt<T>, &ctx};
    if (pw) { a.b = x + gr * Cg * HW; a.rs_b = 1; a.cs_b = HW; }
    else a.virtual_b = &vb;
    gemm(a);
  }
}

template <typename T>
void backward_bias_t(const ConvGeom& g, T* db, const T* dy) {
  const index_t L = g.L();
  parallel_for(g.Cout, 16, [&](index_t o0, index_t o1) {
    // kAcc independent double sums (vectorised lane-wise; 4 would be one chain of
    // dependent adds per vector, ~2 cycles an element), added pairwise at the end.
    constexpr int kAcc = 16;
    for (index_t o = o0; o < o1; ++o) {
      double acc[kAcc] = {};
      for (index_t n = 0; n < g.N; ++n) {
        const T* r = dy + (n * g.Cout + o) * L;
        index_t l = 0;
        for (; l + kAcc <= L; l += kAcc)
          for (int k = 0; k < kAcc; ++k) acc[k] += double(r[l + k]);
        for (; l < L; ++l) acc[l % kAcc] += double(r[l]);
      }
      for (int w = kAcc / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
      db[o] = T(acc[0]);
    }
  });
}

template <typename T>
void im2col_t(const ConvGeom& g, T* cols, const T* x) {
  const index_t L = g.L(), K = g.C * g.kh * g.kw, HW = g.H * g.W, khw = g.kh * g.kw;
  ConvGeom g1 = g;
  g1.groups = 1;
  const index_t rows = checked_mul(g.N, K, "im2col");
  if (L == 0) return;
  parallel_for(rows, std::max<index_t>(1, 16384 / L), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t n = r / K, p = r - n * K;
      RowSink<T> s{cols + r * L, x + (n * g.C + p / khw) * HW};
      walk_row(g1, p, 0, L, s);
    }
  });
}

template <typename T>
void col2im_t(const ConvGeom& g, T* x, const T* cols) {
  const index_t L = g.L(), K = g.C * g.kh * g.kw, HW = g.H * g.W;
  ConvGeom g1 = g;
  g1.groups = 1;
  const index_t planes = checked_mul(g.N, g.C, "col2im");
  parallel_for(planes, std::max<index_t>(1, 4096 / std::max<index_t>(HW, 1)), [&](index_t q0, index_t q1) {
    for (index_t q = q0; q < q1; ++q) {
      const index_t n = q / g.C, c = q - n * g.C;
      std::memset(x + q * HW, 0, size_t(HW) * sizeof(T));
      if (L) col2im_rows(g1, x + n * g.C * HW, cols + n * K * L, L, 0, L, c, c + 1);
    }
  });
}

// The three gradients together; the small-image path shares dY's (Cout x N*L) copy.
template <typename T>
void backward_all_t(const ConvGeom& g, T* dx, T* dw, T* db, const T* dy, const T* x, const T* w) {
  if (!use_small(g) || is_depthwise(g) || g.Kg() == 0 || (shift_data(g) && shift_weight(g))) {
    if (dx) backward_data_t(g, dx, dy, w);
    if (dw) backward_weight_t(g, dw, dy, x);
    if (db) backward_bias_t(g, db, dy);
    return;
  }
  const index_t NL = g.N * g.L();
  auto dyt = transpose_dy(g, dy);
  if (dx && (shift_data(g) || use_winograd(g))) backward_data_t(g, dx, dy, w);
  else if (dx) backward_data_small(g, dx, dyt.get(), w);
  if (dw && (shift_weight(g) || use_winograd(g))) backward_weight_t(g, dw, dy, x);
  else if (dw) backward_weight_small(g, dw, dyt.get(), NL, x);
  if (db) backward_bias_t(g, db, dy);
}

}  // namespace

void conv2d_backward(DType dt, const ConvGeom& g, void* dx, void* dw, void* db, const void* dy, const void* x,
                     const void* w) {
  if (dt == DType::f32)
    backward_all_t<float>(g, static_cast<float*>(dx), static_cast<float*>(dw), static_cast<float*>(db),
                          static_cast<const float*>(dy), static_cast<const float*>(x), static_cast<const float*>(w));
  else
    backward_all_t<double>(g, static_cast<double*>(dx), static_cast<double*>(dw), static_cast<double*>(db),
                           static_cast<const double*>(dy), static_cast<const double*>(x), static_cast<const double*>(w));
}

void conv2d_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w, const void* bias) {
  if (dt == DType::f32)
    forward_t<float>(g, static_cast<float*>(y), static_cast<const float*>(x), static_cast<const float*>(w), static_cast<const float*>(bias));
  else
    forward_t<double>(g, static_cast<double*>(y), static_cast<const double*>(x), static_cast<const double*>(w), static_cast<const double*>(bias));
}

void conv2d_backward_data(DType dt, const ConvGeom& g, void* dx, const void* dy, const void* w) {
  if (dt == DType::f32)
    backward_data_t<float>(g, static_cast<float*>(dx), static_cast<const float*>(dy), static_cast<const float*>(w));
  else
    backward_data_t<double>(g, static_cast<double*>(dx), static_cast<const double*>(dy), static_cast<const double*>(w));
}

void conv_transpose2d_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w,
                              const void* bias) {
  conv2d_backward_data(dt, g, y, x, w);
  if (!bias) return;
  const index_t HW = g.H * g.W;
  parallel_for(g.N * g.C, std::max<index_t>(1, 16384 / std::max<index_t>(HW, 1)), [&](index_t q0, index_t q1) {
    for (index_t q = q0; q < q1; ++q) {
      const index_t c = q % g.C;
      if (dt == DType::f32) {
        float* r = static_cast<float*>(y) + q * HW;
        const float b = static_cast<const float*>(bias)[c];
        for (index_t i = 0; i < HW; ++i) r[i] += b;
      } else {
        double* r = static_cast<double*>(y) + q * HW;
        const double b = static_cast<const double*>(bias)[c];
        for (index_t i = 0; i < HW; ++i) r[i] += b;
      }
    }
  });
}

void conv2d_backward_weight(DType dt, const ConvGeom& g, void* dw, const void* dy, const void* x) {
  if (dt == DType::f32)
    backward_weight_t<float>(g, static_cast<float*>(dw), static_cast<const float*>(dy), static_cast<const float*>(x));
  else
    backward_weight_t<double>(g, static_cast<double*>(dw), static_cast<const double*>(dy), static_cast<const double*>(x));
}

void conv2d_backward_bias(DType dt, const ConvGeom& g, void* db, const void* dy) {
  if (dt == DType::f32) backward_bias_t<float>(g, static_cast<float*>(db), static_cast<const float*>(dy));
  else backward_bias_t<double>(g, static_cast<double*>(db), static_cast<const double*>(dy));
}

void im2col(DType dt, const ConvGeom& g, void* cols, const void* x) {
  if (dt == DType::f32) im2col_t<float>(g, static_cast<float*>(cols), static_cast<const float*>(x));
  else im2col_t<double>(g, static_cast<double*>(cols), static_cast<const double*>(x));
}

void col2im(DType dt, const ConvGeom& g, void* x, const void* cols) {
  if (dt == DType::f32) col2im_t<float>(g, static_cast<float*>(x), static_cast<const float*>(cols));
  else col2im_t<double>(g, static_cast<double*>(x), static_cast<const double*>(cols));
}

}  // namespace nnk
