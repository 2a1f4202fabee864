// Scaled dot-product attention, FlashAttention style (forward and backward).
//
// Dimension letters: NB flattened output batch (batch x heads), L queries, S keys,
// E query/key head dim, Ev value head dim.
//   S_ij = scale * sum_e Q[i, e] K[j, e] + M_ij       M: additive float mask, or 0 / -inf
//                                                    from a bool mask (true takes part) and
//                                                    from causal (query i sees keys j <= i)
//   lse_i = log sum_j exp(S_ij)      (-inf when every key of row i is masked out)
//   P_ij = exp(S_ij - lse_i)         O[i, :] = sum_j P_ij V[j, :]   (0 for a masked-out row)
// Backward (FlashAttention-2), with dO the gradient of O and D_i = sum_e dO[i, e] O[i, e]:
//   dV = P^T dO,  dP = dO V^T,  dS = P o (dP - D),  dQ = scale dS K,  dK = scale dS^T Q.
//
// The batch is described by per-element offsets computed by the binding: output batch
// element b reads Q at q + off_q[b] (strides rs_q over L, cs_q over E), K at k + off_k[b],
// V at v + off_v[b] and the mask at mask + off_mask[b]; broadcast batch dims and grouped
// query attention (several query heads sharing one key/value head) are just repeated
// offsets, so K and V are never copied. Outputs are C-contiguous: out (NB, L, Ev),
// lse (NB, L). The backward's gradients are C-contiguous in the inputs' own batch shapes:
// dq (NQ, L, E), dk (NKV, S, E), dv (NKV, S, Ev); groups (CSR lists of output batch
// elements) say which b accumulate into each q / kv batch element, always in one fixed
// order, so every gradient block has one owner and results are deterministic.
#pragma once
#include "core/cpu_features.h"
#include "core/types.h"

namespace nnk {

enum class AttnMask : int { none = 0, boolean = 1, additive = 2 };

struct AttnParams {
  DType dtype = DType::f32;
  index_t NB = 0, L = 0, S = 0, E = 0, Ev = 0;
  const void* q = nullptr; index_t rs_q = 0, cs_q = 0;
  const void* k = nullptr; index_t rs_k = 0, cs_k = 0;
  const void* v = nullptr; index_t rs_v = 0, cs_v = 0;
  const index_t* off_q = nullptr;  // NB entries each
  const index_t* off_k = nullptr;
  const index_t* off_v = nullptr;
  AttnMask mask_kind = AttnMask::none;
  const void* mask = nullptr;      // bool (uint8, nonzero = takes part) or the dtype of q
  index_t rs_mask = 0, cs_mask = 0;
  const index_t* off_mask = nullptr;
  bool causal = false;
  double scale = 1.0;
};

// Forward: writes out (NB, L, Ev) and lse (NB, L) (lse may be null).
void attention_fwd(Isa isa, const AttnParams& p, void* out, void* lse);

struct AttnGroups {
  index_t n = 0;                   // number of groups
  const index_t* start = nullptr;  // n + 1 entries
  const index_t* items = nullptr;  // output batch elements, group g: items[start[g] .. start[g+1])
};

// Backward: dout, out (NB, L, Ev) and lse (NB, L) C-contiguous. Writes dq (q_groups.n, L, E),
// dk (kv_groups.n, S, E), dv (kv_groups.n, S, Ev) with `=`. K and V of the b in one kv
// group must be the same (off_k, off_v equal); likewise Q within a q group.
void attention_bwd(Isa isa, const AttnParams& p, const void* dout, const void* out,
                   const void* lse, const AttnGroups& q_groups, const AttnGroups& kv_groups,
                   void* dq, void* dk, void* dv);

namespace ref {
// Plain loops over full rows of scores (the oracle): same contract as nnk::attention_fwd.
void attention_fwd(const AttnParams& p, void* out, void* lse);
}  // namespace ref

}  // namespace nnk
