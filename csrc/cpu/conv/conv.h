// 2-D convolution (NCHW) on the GEMM engine, im2col / col2im, transposed convolution.
//
// Geometry (ConvGeom): x (N, C, H, W), weight (Cout, C/groups, kh, kw), y (N, Cout, Ho, Wo),
//   Ho = (H + pt + pb - dh*(kh-1) - 1) / sh + 1   (likewise Wo with pl, pr, dw, kw, sw)
//   y[n, o, oh, ow] = bias[o] + sum_{c, i, j} w[o, c, i, j] * x[n, g*Cg + c, oh*sh - pt + i*dh, ow*sw - pl + j*dw]
// (g = o / (Cout/groups), Cg = C/groups; out-of-range x reads are zero padding.)
//
// As matrices, per image n and group g, with L = Ho*Wo and Kg = Cg*kh*kw:
//   forward          Y_g (Cout_g x L)  = W_g (Cout_g x Kg) @ cols_g (Kg x L)
//   backward-data    cols_g            = W_g^T @ dY_g,  then dX_g = col2im(cols_g)
//   backward-weight  dW_g (Cout_g x Kg) = sum_n dY_g[n] @ cols_g[n]^T
// cols (im2col: row p = (c, i, j), column l = (oh, ow)) is never built whole: the forward
// and the backward-weight GEMMs read it through virtual B packers (gemm.h VirtualB) that
// gather patches straight from the image into packed panels; backward-data builds it in
// column chunks of bounded size and scatters each chunk back (col2im) at once.
// Outputs at least 8 pixels wide go through the vectorised shift packer (shift_pack.h):
// the forward and the backward-weight for any stride (strided: over the image's stride
// phases), and, at stride 1, backward-data as a forward convolution of dY with the
// transposed, flipped kernel (no column matrix, no col2im):
//   dX_g (Cg x H*W) = Wt_g (Cg x Cout_g*kh*kw) @ B(dY_g),  B's row (o, i, j) = dY_g[o] shifted by (pt - i*dh, pl - j*dw)
// Transposed convolution is backward-data of convolution (and its backward is a forward
// convolution plus a backward-weight), so it needs no kernels of its own.
//
// All arrays here are C-contiguous; the bindings make them so.
#pragma once
#include "core/types.h"

namespace nnk {

struct ConvGeom {
  index_t N = 0, C = 0, H = 0, W = 0;      // input
  index_t Cout = 0, Ho = 0, Wo = 0;        // output
  index_t kh = 1, kw = 1;
  index_t sh = 1, sw = 1;
  index_t pt = 0, pl = 0;                  // top / left padding (bottom/right are implied by Ho, Wo)
  index_t dh = 1, dw = 1;
  index_t groups = 1;
  index_t Cg() const { return C / groups; }
  index_t Coutg() const { return Cout / groups; }
  index_t L() const { return Ho * Wo; }
  index_t Kg() const { return Cg() * kh * kw; }
};

// y (N, Cout, Ho, Wo) = conv(x, w) + bias (bias may be null).
void conv2d_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w,
                    const void* bias);
// dx (N, C, H, W) = backward-data of conv (overwritten).
void conv2d_backward_data(DType dt, const ConvGeom& g, void* dx, const void* dy, const void* w);
// dw (Cout, Cg, kh, kw) = backward-weight (overwritten).
void conv2d_backward_weight(DType dt, const ConvGeom& g, void* dw, const void* dy, const void* x);
// db (Cout) = sum of dy over n, oh, ow.
void conv2d_backward_bias(DType dt, const ConvGeom& g, void* db, const void* dy);
// The three above at once (dx, dw, db each may be null: not computed); results equal to
// separate calls, with work shared between them.
void conv2d_backward(DType dt, const ConvGeom& g, void* dx, void* dw, void* db, const void* dy, const void* x,
                     const void* w);

// Transposed convolution with the geometry g of the convolution it transposes: x is g's
// output side (N, Cout, Ho, Wo), y its input side (N, C, H, W), w (Cout, C/groups, kh, kw);
// y = backward-data of conv applied to x, plus bias[c] (C values, may be null).
void conv_transpose2d_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w,
                              const void* bias);

// im2col (F.unfold): cols (N, C*kh*kw, L) from x (N, C, H, W); groups ignored.
void im2col(DType dt, const ConvGeom& g, void* cols, const void* x);
// col2im (F.fold): x (N, C, H, W) = scatter-add of cols (N, C*kh*kw, L); x overwritten.
void col2im(DType dt, const ConvGeom& g, void* x, const void* cols);

namespace ref {
// Direct loops over the definition (the oracle for tests).
void conv2d_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w,
                    const void* bias);
void conv2d_backward_data(DType dt, const ConvGeom& g, void* dx, const void* dy, const void* w);
void conv2d_backward_weight(DType dt, const ConvGeom& g, void* dw, const void* dy, const void* x);
}  // namespace ref

}  // namespace nnk
