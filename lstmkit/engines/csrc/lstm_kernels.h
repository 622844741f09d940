// The per-step kernels of the fused CPU engine's LSTM loops (lstm_loops.cpp): the gate arithmetic
// of one step, forward and backward, as vectorised passes over (B, H), plus zoneout and the
// holding of finished sequences. Same equations as lstmkit/cells/lstm.py (forward) and
// lstmkit/engines/fused_lstm.py (backward); the tests compare them.
//
// Gate layout of a (B, G*H) row, as lstmkit.cells.gates defines it: i, f, g, o (G = 4), or f, g, o
// for the coupled cell (G = 3, i = 1 - f). Peephole weights (optional) are stacked i, f, o (f, o).

#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cmath>

namespace lstmkit {

// Where exp(-x) overflows, IEEE (and torch.sigmoid) give 1 / (1 + inf) = 0 exactly; with
// -ffast-math GCC divides by a reciprocal estimate (vrcpps) that turns 1 / (1 + inf) into NaN. So
// past overflow (x below -log(max), -88.72 float / -709.78 double) the result is a select of 0,
// and exp's argument is capped to stay finite. The exact 0 matters where a huge cell value meets
// a saturated gate (an intervention that sets c to 1e300): 1e-308 * 1e300 is not negligible.
template <typename T>
inline T sigmoid(T x) {
  constexpr T overflow = sizeof(T) == 4 ? T(88.7228391) : T(709.782712893384);
  const T e = std::exp(std::min(-x, overflow));
  return -x > overflow ? T(0) : T(1) / (T(1) + e);
}

// One step of lstmkit.cells.lstm.lstm_pointwise_ + lstm_output_ (the loop applies LN_c and the
// projection afterwards): a (B, G*H) holds pre on entry and the activations on return; writes
// c_t and o tanh(c_t).
// Rows past their sequence's end (valid[b] false) keep the previous state instead.
template <typename T, bool PEEP, bool COUPLED>
void lstm_step(T* a, const T* c_prev, const T* h_prev, T* c_out, T* h_out, const T* peep,
               const bool* valid, int64_t B, int64_t H) {
  constexpr int G = COUPLED ? 3 : 4;
  constexpr int F = COUPLED ? 0 : 1;  // block index of f; g and o follow
  for (int64_t b = 0; b < B; ++b) {
    T* ab = a + b * G * H;
    const T* cp = c_prev + b * H;
    T* cb = c_out + b * H;
    T* hb = h_out + b * H;
    if (valid && !valid[b]) {  // h_prev null: the caller holds h itself (projection)
      std::copy(cp, cp + H, cb);
      if (h_prev) std::copy(h_prev + b * H, h_prev + (b + 1) * H, hb);
      continue;
    }
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      T pf = ab[F * H + j];
      T po = ab[(F + 2) * H + j];
      T pi = COUPLED ? T(0) : ab[j];
      if constexpr (PEEP) {
        if constexpr (!COUPLED) pi += peep[j] * cp[j];
        pf += peep[(G - 3) * H + j] * cp[j];
      }
      T f = sigmoid(pf);
      T i = COUPLED ? T(1) - f : sigmoid(pi);
      T g = std::tanh(ab[(F + 1) * H + j]);
      T c = f * cp[j] + i * g;
      if constexpr (PEEP) po += peep[(G - 2) * H + j] * c;
      T o = sigmoid(po);
      if constexpr (!COUPLED) ab[j] = i;
      ab[F * H + j] = f;
      ab[(F + 1) * H + j] = g;
      ab[(F + 2) * H + j] = o;
      cb[j] = c;
      hb[j] = o * std::tanh(c);
    }
  }
}

template <typename T>
void lstm_step_any(T* a, const T* cp, const T* hp, T* c, T* h, const T* peep, const bool* valid,
                   int64_t B, int64_t H, bool coupled) {
  if (peep != nullptr) {
    coupled ? lstm_step<T, true, true>(a, cp, hp, c, h, peep, valid, B, H)
            : lstm_step<T, true, false>(a, cp, hp, c, h, peep, valid, B, H);
  } else {
    coupled ? lstm_step<T, false, true>(a, cp, hp, c, h, peep, valid, B, H)
            : lstm_step<T, false, false>(a, cp, hp, c, h, peep, valid, B, H);
  }
}

// h_t = o * tanh(y) with y = LN_c(c_t) (B, H), for the rows that are not held.
template <typename T>
void ln_output(const T* y, const T* act, const bool* valid, T* h_out, int64_t B, int64_t G,
               int64_t H) {
  for (int64_t b = 0; b < B; ++b) {
    if (valid && !valid[b]) continue;
    const T* o = act + b * G * H + (G - 1) * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) h_out[b * H + j] = o[j] * std::tanh(y[b * H + j]);
  }
}

// The backward of one step (lstmkit.engines.fused_lstm.lstm_backward without projection or
// zoneout), straight from the saved activations, in two passes over (B, H) around the LN_c
// backward. With dh = d loss / d h_t and dc = d loss / d c_t carried in, y = LN_c(c_t) (or c_t),
// tc = tanh(y) and dA the trace's own gradient (or 0):
// pass 1:  dpre_o = (dh tc + dA_o) o (1 - o);  dy = dh o (1 - tc^2)
// (LN_c:   dch = LN_c'(dy), by ATen; else dch = dy)
// pass 2:  dcn    = dc + dch + w_co dpre_o
//          dpre_i = (dcn g + dA_i) i (1 - i)                  [coupled: no i block]
//          dpre_f = (dcn c_{t-1} + dA_f) f (1 - f)            [coupled: dcn (c_{t-1} - g)]
//          dpre_g = (dcn i + dA_g) (1 - g^2)                  [coupled: i = 1 - f]
//          dc    <- dcn f + w_ci dpre_i + w_cf dpre_f          (in place)
// Rows past their sequence's end (valid[b] false) held their state: dpre = dy = 0, dc passes on.
template <typename T>
struct StepGrad {
  const T* act;     // (B, G*H) activations of step t
  const T* c;       // (B, H) c_t
  const T* c_prev;  // (B, H) c_{t-1}
  const T* peep;    // (G-1)*H or null
  const T* dA;      // (B, G*H) or null
  const T* ln_w;    // LN_c gain (H) or null (then no LN_c)
  const T* ln_b;    // LN_c shift (H)
  const T* mean;    // (B) LN_c statistics of c_t
  const T* rstd;    // (B)
  const bool* valid;
  int64_t B, G, H;
  bool coupled;
};

template <typename T, bool LNC, bool TRACE>
void grad_pass1(const StepGrad<T>& s, const T* dh, T* dpre, T* dy) {
  const int64_t B = s.B, G = s.G, H = s.H;
  for (int64_t b = 0; b < B; ++b) {
    T* db = dpre + b * G * H;
    T* dyb = dy + b * H;
    if (s.valid && !s.valid[b]) {
      std::fill(db, db + G * H, T(0));
      std::fill(dyb, dyb + H, T(0));
      continue;
    }
    const T* o = s.act + b * G * H + (G - 1) * H;
    const T* cb = s.c + b * H;
    const T* dhb = dh + b * H;
    const T* dAo = TRACE ? s.dA + b * G * H + (G - 1) * H : nullptr;
    const T mu = LNC ? s.mean[b] : T(0), rs = LNC ? s.rstd[b] : T(1);
    const T* lw = s.ln_w;
    const T* lb = s.ln_b;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      T y = cb[j];
      if constexpr (LNC) y = (y - mu) * rs * lw[j] + (lb ? lb[j] : T(0));
      const T tc = std::tanh(y);
      T d_o = dhb[j] * tc;
      if constexpr (TRACE) d_o += dAo[j];
      db[(G - 1) * H + j] = d_o * o[j] * (T(1) - o[j]);
      dyb[j] = dhb[j] * o[j] * (T(1) - tc * tc);
    }
  }
}

template <typename T, bool PEEP, bool COUPLED, bool TRACE>
void grad_pass2(const StepGrad<T>& s, const T* dch, T* dc, T* dpre) {
  constexpr int G = COUPLED ? 3 : 4;
  constexpr int F = COUPLED ? 0 : 1;
  const int64_t H = s.H;
  for (int64_t b = 0; b < s.B; ++b) {
    if (s.valid && !s.valid[b]) continue;
    const T* ab = s.act + b * G * H;
    const T* dab = TRACE ? s.dA + b * G * H : nullptr;
    const T* cpb = s.c_prev + b * H;
    const T* dchb = dch + b * H;
    const T* peep = s.peep;
    T* db = dpre + b * G * H;
    T* dcb = dc + b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T f = ab[F * H + j], g = ab[(F + 1) * H + j];
      const T i = COUPLED ? T(1) - f : ab[j];
      T dcn = dcb[j] + dchb[j];
      if constexpr (PEEP) dcn += peep[(G - 2) * H + j] * db[(F + 2) * H + j];
      T d_f = dcn * (COUPLED ? cpb[j] - g : cpb[j]);
      T d_g = dcn * i;
      if constexpr (TRACE) {
        d_f += dab[F * H + j];
        d_g += dab[(F + 1) * H + j];
      }
      const T dpf = d_f * f * (T(1) - f);
      const T dpg = d_g * (T(1) - g * g);
      T dcp = dcn * f;
      if constexpr (PEEP) dcp += peep[(G - 3) * H + j] * dpf;
      if constexpr (!COUPLED) {
        T d_i = dcn * g;
        if constexpr (TRACE) d_i += dab[j];
        const T dpi = d_i * i * (T(1) - i);
        db[j] = dpi;
        if constexpr (PEEP) dcp += peep[j] * dpi;
      }
      db[F * H + j] = dpf;
      db[(F + 1) * H + j] = dpg;
      dcb[j] = dcp;
    }
  }
}

template <typename T>
void grad_pass1_any(const StepGrad<T>& s, const T* dh, T* dpre, T* dy) {
  if (s.ln_w != nullptr) {
    s.dA ? grad_pass1<T, true, true>(s, dh, dpre, dy) : grad_pass1<T, true, false>(s, dh, dpre, dy);
  } else {
    s.dA ? grad_pass1<T, false, true>(s, dh, dpre, dy)
         : grad_pass1<T, false, false>(s, dh, dpre, dy);
  }
}

template <typename T, bool PEEP, bool COUPLED>
void pass2_trace(const StepGrad<T>& s, const T* dch, T* dc, T* dpre) {
  s.dA ? grad_pass2<T, PEEP, COUPLED, true>(s, dch, dc, dpre)
       : grad_pass2<T, PEEP, COUPLED, false>(s, dch, dc, dpre);
}

template <typename T>
void grad_pass2_any(const StepGrad<T>& s, const T* dch, T* dc, T* dpre) {
  if (s.peep != nullptr) {
    s.coupled ? pass2_trace<T, true, true>(s, dch, dc, dpre)
              : pass2_trace<T, true, false>(s, dch, dc, dpre);
  } else {
    s.coupled ? pass2_trace<T, false, true>(s, dch, dc, dpre)
              : pass2_trace<T, false, false>(s, dch, dc, dpre);
  }
}

inline bool has(const c10::optional<at::Tensor>& x) { return x.has_value() && x->defined(); }

// Zoneout (lstmkit.cells.regularizers.zoneout, lengths folded in): state = prev + a (new - prev),
// a (n) = the probability-weighted share of the new value (0 where a row is held or zoned out).
template <typename T>
void mix(const T* prev, const T* fresh, const T* a, T* out, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = prev[j] + a[j] * (fresh[j] - prev[j]);
}

// Rows past their sequence's end (valid[b] false): out[b] = src[b] (rows of n values); with
// src null they are zeroed.
template <typename T>
void hold_rows(const bool* valid, const T* src, T* out, int64_t B, int64_t n) {
  if (!valid) return;
  for (int64_t b = 0; b < B; ++b) {
    if (valid[b]) continue;
    if (src) {
      std::copy(src + b * n, src + (b + 1) * n, out + b * n);
    } else {
      std::fill(out + b * n, out + (b + 1) * n, T(0));
    }
  }
}

// Its backward: d (n) -> d_new = a d (written to d_new) and the held share (1 - a) d (to hold).
template <typename T>
void split(const T* d, const T* a, T* d_new, T* hold, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const T dj = d[j], dn = a[j] * dj;  // d_new may be d itself: read before writing
    d_new[j] = dn;
    hold[j] = dj - dn;
  }
}

// Row flags (valid: lengths; reset: per-sample resets) must be contiguous (T, B) bool: the loops
// read row t at t * B.
inline void check_flags(const c10::optional<at::Tensor>& flags, int64_t T, int64_t B,
                        const char* what) {
  if (!flags.has_value() || !flags->defined()) return;
  TORCH_CHECK(flags->scalar_type() == at::kBool && flags->dim() == 2 && flags->size(0) == T &&
                  flags->size(1) == B && flags->is_contiguous(),
              what, " must be a contiguous (T, B) bool tensor");
}

// Per-sample resets: row t of reset (T, B) bool when some sequence enters step t afresh, else
// null (the common case costs one scan of B flags).
inline const bool* reset_row(const c10::optional<at::Tensor>& reset, int64_t t, int64_t B) {
  if (!reset.has_value() || !reset->defined()) return nullptr;
  const bool* r = reset->data_ptr<bool>() + t * reset->stride(0);
  return std::any_of(r, r + B, [](bool v) { return v; }) ? r : nullptr;
}

// out[b] = src[b] (rows of n values) where r[b].
template <typename T>
void copy_rows(const bool* r, const T* src, T* out, int64_t B, int64_t n) {
  for (int64_t b = 0; b < B; ++b) {
    if (r[b]) std::copy(src + b * n, src + (b + 1) * n, out + b * n);
  }
}

// acc[b] += x[b]; x[b] = 0 where r[b]: a gradient moved from one state to another.
template <typename T>
void move_rows(const bool* r, T* x, T* acc, int64_t B, int64_t n) {
  for (int64_t b = 0; b < B; ++b) {
    if (!r[b]) continue;
    for (int64_t j = 0; j < n; ++j) acc[b * n + j] += x[b * n + j];
    std::fill(x + b * n, x + (b + 1) * n, T(0));
  }
}

inline const bool* valid_row(const c10::optional<at::Tensor>& valid, int64_t t) {
  if (!valid.has_value() || !valid->defined()) return nullptr;
  return valid->data_ptr<bool>() + t * valid->stride(0);
}

template <typename T>
const T* ptr_or_null(const c10::optional<at::Tensor>& x) {
  return x.has_value() && x->defined() ? x->data_ptr<T>() : nullptr;
}

}  // namespace lstmkit
