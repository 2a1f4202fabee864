// GEMM engine entry points (BLIS design; see gemm.cpp for the five loops).
//
//   C[i, j] = act( alpha * sum_p A[i, p] * B[p, j] + beta * C[i, j] + bias_m[i] + bias_n[j] )
//
//   A (M, K) with element strides (rs_a, cs_a); B (K, N) with (rs_b, cs_b); any strides,
//   negative included: packing reads them. C (M, N) with (rs_c, cs_c), one of them 1.
//   beta == 0: C is not read (BLAS convention), so it may hold garbage or NaN.
//   bias_m: M values (stride 1) added to each row i, or null; bias_n: N values, or null.
//   act: applied last, once, to the finished value (act_param: leaky_relu's slope).
// A or B may instead come pre-packed (PackedMatrix) for weights reused across calls.
#pragma once
#include <memory>

#include "core/cpu_features.h"
#include "core/types.h"
#include "cpu/act/act.h"

namespace nnk {

// A matrix packed once into the micro-panel layout of one ISA and dtype. Layout, per
// KC block of the K dimension (rows p0..p0+kc), the panels of that block one after
// another, each kc x R (R = MR for an A operand, NR for a B operand), zero-padded.
struct PackedMatrix {
  DType dtype;
  Isa isa;
  bool is_a;          // packed as the A (M x K) or the B (K x N) operand
  index_t rows, cols; // logical M x K (A) or K x N (B)
  index_t r;          // panel width: MR or NR
  index_t kc;         // K block size used for the layout
  std::shared_ptr<void> data;
  index_t padded;     // M or N rounded up to r
};

// A B operand that exists only as a packing routine (convolution's im2col: patches are
// read straight from the image into packed panels, the column matrix is never built).
// pack(ctx, dst, p0, kc, j0, nc, NR) writes rows p0..p0+kc, columns j0..j0+nc of the
// virtual K x N matrix into dst[panel][p][NR] (panels of NR columns, zero-padded).
// Called concurrently from several threads with disjoint destinations.
// per_panel: the packer's set-up per call is small, so when a thread's rows of C are one MC
// block the driver packs each micro-panel (nc <= NR) just before the micro-kernels use it,
// while it is in L1, instead of the whole KC x NC block first.
struct VirtualB {
  void (*pack)(const void* ctx, void* dst, index_t p0, index_t kc, index_t j0, index_t nc,
               index_t NR) = nullptr;
  const void* ctx = nullptr;
  bool per_panel = false;
};

struct GemmArgs {
  DType dtype = DType::f32;
  index_t M = 0, N = 0, K = 0;
  const void* a = nullptr; index_t rs_a = 0, cs_a = 0;
  const void* b = nullptr; index_t rs_b = 0, cs_b = 0;
  void* c = nullptr; index_t rs_c = 0, cs_c = 1;
  double alpha = 1.0, beta = 0.0;
  // Optional separate input for the beta term: C := ... + beta * c_in, c_in read with
  // strides (rs_cin, cs_cin), zero strides broadcasting (torch.addmm's `input`). Null: C itself.
  const void* c_in = nullptr; index_t rs_cin = 0, cs_cin = 0;
  const void* bias_m = nullptr;
  const void* bias_n = nullptr;
  Act act = Act::none;
  double act_param = 0.0;
  const PackedMatrix* packed_a = nullptr;  // replaces a/rs_a/cs_a when set
  const PackedMatrix* packed_b = nullptr;  // replaces b/rs_b/cs_b when set
  const VirtualB* virtual_b = nullptr;     // replaces b/rs_b/cs_b when set
};

// Runs on the thread pool; deterministic for a given thread count.
void gemm(const GemmArgs& g);

// Batched GEMM over a broadcast batch: for every batch index b (row-major over
// batch_shape), the operands start at a + a_off[b] etc.; offsets come from the batch
// strides (elements; 0 broadcasts). Small problems run one matrix per thread, large
// ones one after another, each on all threads.
struct BatchSpec {
  int ndim = 0;
  const index_t* shape = nullptr;
  const index_t* stride_a = nullptr;
  const index_t* stride_b = nullptr;
  const index_t* stride_c = nullptr;
};
void gemm_batched(const GemmArgs& g, const BatchSpec& batch);

// Pack A (M x K, strides rs, cs) or B (K x N) for the current ISA; A in K blocks of kc
// (0: the ISA's KC).
PackedMatrix pack_a(DType dt, index_t M, index_t K, const void* a, index_t rs, index_t cs, index_t kc = 0);
PackedMatrix pack_b(DType dt, index_t K, index_t N, const void* b, index_t rs, index_t cs);

// The K block of a GEMM with a per-panel virtual B and K = K: pack its A with it (pack_a's
// kc) to reuse the packed A across calls (a convolution's weight across images).
index_t gemm_virtual_b_kc(DType dt, index_t K);

namespace ref {
// Plain triple loop with the same contract (the oracle for tests).
void gemm(const GemmArgs& g);
}  // namespace ref

}  // namespace nnk
