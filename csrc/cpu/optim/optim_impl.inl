// Optimizer step loops, written once and compiled per ISA: included inside
// nnk::cpu::<isa> (and nnk::ref for the reference) by optim_<isa>.cpp. No reductions, so
// the compiler vectorises the loops with each file's ISA flags. Maths: optim.h.
// Needs <cmath> included by the including file, before its namespace.

template <typename T>
void sgd_step(T* __restrict p, T* __restrict buf, const T* __restrict g, index_t n,
              const SgdParams& hp) {
  const T lr = T(hp.lr), mom = T(hp.momentum), damp = T(1.0 - hp.dampening), wd = T(hp.weight_decay);
  const bool use_wd = hp.weight_decay != 0.0;
  if (hp.momentum == 0.0) {
    for (index_t i = 0; i < n; ++i) {
      const T d = use_wd ? g[i] + wd * p[i] : g[i];
      p[i] = p[i] - lr * d;
    }
  } else if (hp.step <= 1) {
    for (index_t i = 0; i < n; ++i) {
      const T d = use_wd ? g[i] + wd * p[i] : g[i];
      buf[i] = d;
      const T u = hp.nesterov ? d + mom * d : d;
      p[i] = p[i] - lr * u;
    }
  } else {
    for (index_t i = 0; i < n; ++i) {
      const T d = use_wd ? g[i] + wd * p[i] : g[i];
      const T b = mom * buf[i] + damp * d;
      buf[i] = b;
      const T u = hp.nesterov ? d + mom * b : b;
      p[i] = p[i] - lr * u;
    }
  }
}

template <typename T>
void adam_step(T* __restrict p, T* __restrict m, T* __restrict v, const T* __restrict g, index_t n,
               const AdamParams& hp) {
  const double bc1 = 1.0 - std::pow(hp.beta1, double(hp.step));
  const double bc2 = 1.0 - std::pow(hp.beta2, double(hp.step));
  const T step_size = T(hp.lr / bc1);
  const T bc2_sqrt = T(std::sqrt(bc2));
  const T w1 = T(1.0 - hp.beta1), b2 = T(hp.beta2), w2 = T(1.0 - hp.beta2), eps = T(hp.eps);
  const T wd = T(hp.weight_decay), decay = T(1.0 - hp.lr * hp.weight_decay);
  const bool use_wd = hp.weight_decay != 0.0;
  for (index_t i = 0; i < n; ++i) {
    T pi = p[i];
    T gi = g[i];
    if (use_wd) {
      if (hp.decoupled) pi = pi * decay;
      else gi = gi + wd * pi;
    }
    const T mi = m[i] + w1 * (gi - m[i]);
    const T vi = b2 * v[i] + w2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
  }
}
