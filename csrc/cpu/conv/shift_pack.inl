// shift_pack (contract: shift_pack.h), included inside one ISA namespace by
// shift_pack{,_avx2,_avx512}.cpp, each of which first defines the vector traits
// VF (float) and VD (double): L lanes, type msk, mask(bits), zero(), load(m, p) (lanes of
// m read p[lane], the others are zero), load_merge(r, m, p) (the others keep r), store(p, r),
// transpose(src, lds, dst, ldd) (an L x L block: dst[i * ldd + j] = src[j * lds + i]).

namespace {

constexpr int kMaxSeg = 2;  // (offset, mask) entries per vector: runs it meets (more: lane-by-lane panel)

struct Entry {
  index_t off;    // offset of the vector's lane 0 from the channel's base
  uint32_t mask;  // lanes read
};

// Per-panel table: for tap t and vector v, cnt[t * nvec + v] entries at ent[(t * nvec + v) * kMaxSeg]
// (entries past the count have an empty mask). ok: usable by pack_panel's vector path.
struct PanelTable {
  std::vector<Entry> ent;
  std::vector<int> cnt;
  int max_cnt = 0;
  bool ok = false;
};

// Fills the table for the panel of columns [j0, j0 + nr); false if a vector meets more
// than kMaxSeg segments.
inline bool build_table(const ShiftPack& s, index_t j0, index_t nr, int VL, index_t nvec, PanelTable& tb) {
  tb.ent.resize(size_t(s.ntaps * nvec * kMaxSeg));
  std::fill(tb.ent.begin(), tb.ent.end(), Entry{0, 0});
  tb.cnt.assign(size_t(s.ntaps * nvec), 0);
  tb.max_cnt = 0;
  const index_t L = s.Ho * s.Wo;
  index_t n = j0 / L, oh = (j0 - n * L) / s.Wo, ow = j0 - n * L - oh * s.Wo;
  for (index_t q0 = 0; q0 < nr;) {  // segment: lanes [q0, q0 + len) are pixels (n, oh, ow ..)
    const index_t len = std::min(s.Wo - ow, nr - q0);
    for (index_t t = 0; t < s.ntaps; ++t) {
      const index_t ih = oh + s.dy[t], iw0 = ow + s.dx[t];
      if (ih < 0 || ih >= s.Hs) continue;
      const index_t lo = q0 + std::max<index_t>(0, -iw0), hi = q0 + std::min(len, s.Ws - iw0);
      for (index_t v = 0; v < nvec; ++v) {
        const index_t a = std::max(lo, v * VL), b = std::min(hi, (v + 1) * VL);
        if (a >= b) continue;
        int& c = tb.cnt[size_t(t * nvec + v)];
        Entry* e = &tb.ent[size_t((t * nvec + v) * kMaxSeg)];
        const index_t off = n * s.istride + s.toff[t] + ih * s.Ws + iw0 - q0 + v * VL;
        const uint32_t mask = ((1u << (b - v * VL)) - 1u) & ~((1u << (a - v * VL)) - 1u);
        if (c > 0 && e[c - 1].off == off) {  // the next input row continues the run (Wo == Ws)
          e[c - 1].mask |= mask;
          continue;
        }
        if (c == kMaxSeg) return false;
        e[c++] = Entry{off, mask};
        tb.max_cnt = std::max(tb.max_cnt, c);
      }
    }
    q0 += len;
    ow = 0;
    if (++oh == s.Ho) {
      oh = 0;
      ++n;
    }
  }
  return true;
}

// Lane by lane (panels with too many segments per vector).
template <typename T>
void pack_panel_lanes(const ShiftPack& s, T* d, index_t p0, index_t kc, index_t j0, index_t nr, index_t NR) {
  const T* base = static_cast<const T*>(s.base);
  for (index_t p = p0; p < p0 + kc; ++p, d += NR) {
    const index_t c = p / s.ntaps, t = p - c * s.ntaps;
    const T* plane = base + c * s.cstride + s.toff[t];
    for (index_t q = 0; q < NR; ++q) {
      T v = T(0);
      if (q < nr) {
        const index_t L = s.Ho * s.Wo, n = (j0 + q) / L, l = j0 + q - n * L, oh = l / s.Wo, ow = l - oh * s.Wo;
        const index_t ih = oh + s.dy[t], iw = ow + s.dx[t];
        if (ih >= 0 && ih < s.Hs && iw >= 0 && iw < s.Ws) v = plane[n * s.istride + ih * s.Ws + iw];
      }
      d[q] = v;
    }
  }
}

// Rows of tap t for channels c0 .. c1 (row p = c * ntaps + t goes to d + (p - p0) * NR):
// two vectors (NR = 2L), E entries each (unused entries have an empty mask).
template <class V, int E, typename T>
inline void pack_tap2(const T* base, index_t cstride, const Entry* e0, const Entry* e1, T* d, index_t dstep,
                      index_t c0, index_t c1) {
  typename V::msk m0[E], m1[E];
  index_t o0[E], o1[E];
  for (int k = 0; k < E; ++k) {
    m0[k] = V::mask(e0[k].mask); o0[k] = e0[k].off;
    m1[k] = V::mask(e1[k].mask); o1[k] = e1[k].off;
  }
  const T* s = base + c0 * cstride;
  for (index_t c = c0; c < c1; ++c, s += cstride, d += dstep) {
    typename V::reg r0 = V::load(m0[0], s + o0[0]);
    typename V::reg r1 = V::load(m1[0], s + o1[0]);
    for (int k = 1; k < E; ++k) {
      r0 = V::load_merge(r0, m0[k], s + o0[k]);
      r1 = V::load_merge(r1, m1[k], s + o1[k]);
    }
    V::store(d, r0);
    V::store(d + V::L, r1);
  }
}

template <class V>
void make_table(const ShiftPack& s, index_t j0, index_t nr, index_t NR, PanelTable& tb) {
  tb.ok = NR == 2 * V::L && build_table(s, j0, nr, V::L, 2, tb);
}

// Rows p0 .. p0 + kc of the panel of columns [j0, j0 + nr) into d (kc x NR), with its table.
template <class V, typename T>
void pack_panel(const ShiftPack& s, const PanelTable& tb, T* d, index_t p0, index_t kc, index_t j0, index_t nr,
                index_t NR) {
  if (!tb.ok) {
    pack_panel_lanes(s, d, p0, kc, j0, nr, NR);
    return;
  }
  const T* base = static_cast<const T*>(s.base);
  const index_t nt = s.ntaps;
  const Entry* ent = tb.ent.data();
  for (index_t t = 0; t < nt; ++t) {
    // Channels whose row of tap t lies in [p0, p0 + kc).
    const index_t c0 = p0 <= t ? 0 : ceil_div(p0 - t, nt);
    const index_t c1 = p0 + kc <= t ? 0 : ceil_div(p0 + kc - t, nt);
    if (c0 >= c1) continue;
    T* dt = d + (c0 * nt + t - p0) * NR;
    const Entry* e0 = ent + (t * 2) * kMaxSeg;
    const Entry* e1 = e0 + kMaxSeg;
    if (tb.max_cnt <= 1) pack_tap2<V, 1>(base, s.cstride, e0, e1, dt, nt * NR, c0, c1);
    else pack_tap2<V, 2>(base, s.cstride, e0, e1, dt, nt * NR, c0, c1);
  }
}

template <class V, typename T>
void shift_pack_t(const ShiftPack& s, T* dst, index_t p0, index_t kc, index_t j0, index_t nc, index_t NR) {
  thread_local PanelTable tb;
  for (index_t jp = 0; jp < nc; jp += NR) {
    const index_t nr = std::min(NR, nc - jp);
    make_table<V>(s, j0 + jp, nr, NR, tb);
    pack_panel<V>(s, tb, dst + (jp / NR) * kc * NR, p0, kc, j0 + jp, nr, NR);
  }
}

// Prefetches the first line each vector of rows p0 .. p0 + n (the panel the GEMM asks for
// next: the same pixels, the next channels) reads; the channels are a plane apart, a
// stride the hardware prefetchers do not follow. Rows past the matrix only prefetch.
template <typename T>
inline void prefetch_rows_t(const ShiftPack& s, const PanelTable& tb, index_t p0, index_t n) {
  const char* base = static_cast<const char*>(s.base);
  for (index_t p = p0; p < p0 + n; ++p) {
    const index_t c = p / s.ntaps, t = p - c * s.ntaps;
    const Entry* e = tb.ent.data() + (t * 2) * kMaxSeg;
    const index_t o = c * s.cstride;
    __builtin_prefetch(base + (o + e[0].off) * index_t(sizeof(T)));
    __builtin_prefetch(base + (o + e[kMaxSeg].off) * index_t(sizeof(T)));
  }
}

// B^T: rows q0 .. q0 + kc of the (L x Kg) transpose into panels of NR columns. Per panel
// and block of 2L pixels: the forward packer writes the panel's NR rows of B for those
// pixels into tmp (NR x 2L), then L x L transposes move them to the rows of B^T. The GEMM
// asks for the panels of one block of rows one after another, so the pixel blocks' tables
// are kept (per thread) while the geometry and the rows asked for stay the same.
template <class V, typename T>
void shift_pack_trans_t(const ShiftPack& s, T* dst, index_t q0, index_t kc, index_t j0, index_t nc, index_t NR) {
  constexpr int L = V::L;
  constexpr index_t QB = 2 * L;
  struct Cache {
    std::vector<index_t> key;
    std::vector<PanelTable> tabs;
    std::vector<char> built;
  };
  thread_local Cache cache;
  thread_local std::vector<index_t> key;
  thread_local std::vector<T> tmp, part;
  key.assign({q0, kc, NR, s.ntaps, s.cstride, s.Hs, s.Ws, s.Ho, s.Wo});
  for (index_t t = 0; t < s.ntaps; ++t) key.insert(key.end(), {s.toff[t], s.dy[t], s.dx[t]});
  const index_t nblk = ceil_div(kc, QB);
  if (key != cache.key) {
    cache.key = key;
    if (index_t(cache.tabs.size()) < nblk) cache.tabs.resize(size_t(nblk));
    cache.built.assign(size_t(nblk), 0);
  }
  tmp.resize(size_t(NR * QB));
  part.resize(size_t(QB * NR));
  for (index_t jp = 0; jp < nc; jp += NR) {
    const index_t nr = std::min(NR, nc - jp);
    T* d = dst + (jp / NR) * kc * NR;
    if (nr < NR) std::fill(tmp.begin() + nr * QB, tmp.end(), T(0));
    for (index_t qb = 0; qb < kc; qb += QB) {
      const index_t nq = std::min(QB, kc - qb);
      PanelTable& tb = cache.tabs[size_t(qb / QB)];
      if (!cache.built[size_t(qb / QB)]) {
        make_table<V>(s, q0 + qb, nq, QB, tb);
        cache.built[size_t(qb / QB)] = 1;
      }
      if (tb.ok) prefetch_rows_t<T>(s, tb, j0 + jp + NR, NR);
      pack_panel<V>(s, tb, tmp.data(), j0 + jp, nr, q0 + qb, nq, QB);
      if (NR % L != 0) {  // no square blocks: element by element
        for (index_t q = 0; q < nq; ++q)
          for (index_t j = 0; j < NR; ++j) d[(qb + q) * NR + j] = tmp[size_t(j * QB + q)];
        continue;
      }
      T* out = nq == QB ? d + qb * NR : part.data();  // a partial block goes through part
      for (index_t jb = 0; jb < NR; jb += L)
        for (index_t qq = 0; qq < QB; qq += L) V::transpose(tmp.data() + jb * QB + qq, QB, out + qq * NR + jb, NR);
      if (nq < QB) std::copy(part.begin(), part.begin() + nq * NR, d + qb * NR);
    }
  }
}

}  // namespace

void shift_pack_trans(DType dt, const ShiftPack& s, void* dst, index_t q0, index_t kc, index_t j0, index_t nc,
                      index_t NR) {
  if (dt == DType::f32) shift_pack_trans_t<VF>(s, static_cast<float*>(dst), q0, kc, j0, nc, NR);
  else shift_pack_trans_t<VD>(s, static_cast<double*>(dst), q0, kc, j0, nc, NR);
}

void shift_pack(DType dt, const ShiftPack& s, void* dst, index_t p0, index_t kc, index_t j0, index_t nc, index_t NR) {
  if (dt == DType::f32) shift_pack_t<VF>(s, static_cast<float*>(dst), p0, kc, j0, nc, NR);
  else shift_pack_t<VD>(s, static_cast<double*>(dst), p0, kc, j0, nc, NR);
}
