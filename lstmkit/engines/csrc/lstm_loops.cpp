// The LSTM time loops of the fused CPU engine, compiled on first use (lstmkit/engines/cpu_loops.py).
//
// They do exactly what the pure-PyTorch loops in lstmkit/engines/fused_lstm.py do (those stay the
// readable reference and the fallback, and the tests compare the two): per step the matmuls and
// layer norms through ATen (oneDNN / MKL speed) and the gate arithmetic as one vectorised pass
// over (B, H) written here, so that a step costs its matmul plus a few microseconds instead of
// ~8 eager torch calls.
//
// Gate layout of a (B, G*H) row, as lstmkit.cells.gates defines it: i, f, g, o (G = 4), or f, g, o
// for the coupled cell (G = 3, i = 1 - f). Peephole weights (optional) are stacked i, f, o (f, o).
// All tensors are contiguous, CPU, float32 or float64 (checked by the Python caller).

#include <torch/extension.h>

#include <cmath>

namespace {

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
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

bool has(const c10::optional<at::Tensor>& x) { return x.has_value() && x->defined(); }

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

const bool* valid_row(const c10::optional<at::Tensor>& valid, int64_t t) {
  if (!valid.has_value() || !valid->defined()) return nullptr;
  return valid->data_ptr<bool>() + t * valid->stride(0);
}

template <typename T>
const T* ptr_or_null(const c10::optional<at::Tensor>& x) {
  return x.has_value() && x->defined() ? x->data_ptr<T>() : nullptr;
}

}  // namespace

// xp (T, B, G*H) = LN_ih(W_ih x) + b_ih + b_hh; h0, c0 (B, H); w_t (H, G*H) = W_hh^T; peep
// (G-1)*H or none; rmask (B, H) recurrent dropout mask or none; valid (T, B) bool (lengths) or
// none; ln_hh (G*H) gain of LN_hh or none, with raw (T, B, G*H) receiving W_hh h_in; ln_c_w,
// ln_c_b (H) LN_c or none; zo_h, zo_c (T, B, H) zoneout's share of the new value (lengths folded
// in; then valid is none) with Cn (T, B, H) receiving the cell before zoneout, or none; w_hr_t
// (H, P) = W_hr^T, the projection, or none (then P = H). Writes A
// (T, B, G*H) activations, C (T, B, H) cells and Hs (T, B, P) hidden states, indexed by time
// (reverse: processed from T-1 down to 0).
void lstm_forward_loop(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& c0,
                       const at::Tensor& w_t, const c10::optional<at::Tensor>& peep,
                       const c10::optional<at::Tensor>& rmask,
                       const c10::optional<at::Tensor>& valid,
                       const c10::optional<at::Tensor>& ln_hh, c10::optional<at::Tensor> raw,
                       const c10::optional<at::Tensor>& ln_c_w,
                       const c10::optional<at::Tensor>& ln_c_b,
                       const c10::optional<at::Tensor>& zo_h,
                       const c10::optional<at::Tensor>& zo_c, c10::optional<at::Tensor> Cn,
                       const c10::optional<at::Tensor>& w_hr_t, double eps, bool coupled,
                       bool reverse, at::Tensor& A, at::Tensor& C, at::Tensor& Hs) {
  const int64_t T = xp.size(0), B = xp.size(1), H = c0.size(1), GH = A.size(2);
  const int64_t P = h0.size(1);  // H_out: the projection's size, else H
  const bool proj = has(w_hr_t);
  const bool zoneout = has(zo_h);
  TORCH_CHECK(!zoneout || (has(zo_c) && has(Cn) && zo_h->is_contiguous() &&
                           zo_c->is_contiguous()),
              "lstm_forward_loop: zoneout needs zo_h, zo_c (contiguous) and Cn");
  at::NoGradGuard no_grad;
  at::Tensor h = h0, c = c0;
  at::Tensor h_in = has(rmask) ? at::empty_like(h0) : at::Tensor();
  at::Tensor h_new = zoneout ? at::empty_like(h0) : at::Tensor();
  at::Tensor m = proj ? at::empty_like(c0) : at::Tensor();  // o tanh(c) before W_hr
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? T - 1 - k : k;
    at::Tensor a = A.select(0, t);
    at::Tensor h_src = has(rmask) ? at::mul_out(h_in, h, *rmask) : h;
    if (has(ln_hh)) {  // pre = xp + LN_hh(W_hh h_in)
      at::Tensor r = raw->select(0, t);
      at::mm_out(r, h_src, w_t);
      at::Tensor y = std::get<0>(at::native_layer_norm(r, {GH}, *ln_hh, {}, eps));
      at::add_out(a, xp.select(0, t), y);
    } else {
      at::addmm_out(a, xp.select(0, t), h_src, w_t);
    }
    at::Tensor c_t = C.select(0, t), h_t = Hs.select(0, t);
    // the cell's new values; with zoneout they are mixed into the states afterwards
    at::Tensor c_n = zoneout ? Cn->select(0, t) : c_t, h_n = zoneout ? h_new : h_t;
    at::Tensor y_c;  // LN_c(c_t), then h_t = o tanh(y_c) replaces the step's o tanh(c_t)
    at::Tensor m_n = proj ? m : h_n;  // where o tanh(c) goes
    AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "lstm_forward_loop", [&] {
      using T_ = scalar_t;
      const bool* v = valid_row(valid, t);
      lstm_step_any<T_>(a.data_ptr<T_>(), c.data_ptr<T_>(), proj ? nullptr : h.data_ptr<T_>(),
                        c_n.data_ptr<T_>(), m_n.data_ptr<T_>(), ptr_or_null<T_>(peep), v, B, H,
                        coupled);
      if (has(ln_c_w)) {
        y_c = std::get<0>(at::native_layer_norm(c_n, {H}, *ln_c_w, ln_c_b, eps));
        ln_output<T_>(y_c.data_ptr<T_>(), a.data_ptr<T_>(), v, m_n.data_ptr<T_>(), B, GH / H, H);
      }
      if (proj) {  // h = W_hr m, then the held rows keep h_{t-1}
        at::mm_out(h_n, m, *w_hr_t);
        hold_rows<T_>(v, h.data_ptr<T_>(), h_n.data_ptr<T_>(), B, P);
      }
      if (zoneout) {
        mix<T_>(c.data_ptr<T_>(), c_n.data_ptr<T_>(), zo_c->data_ptr<T_>() + t * B * H,
                c_t.data_ptr<T_>(), B * H);
        mix<T_>(h.data_ptr<T_>(), h_n.data_ptr<T_>(), zo_h->data_ptr<T_>() + t * B * P,
                h_t.data_ptr<T_>(), B * P);
      }
    });
    h = h_t;
    c = c_t;
  }
}

// The backward time loop. act (T, B, G*H) activations and C (T, B, H) cells from the forward;
// c0 (B, H); peep or none; dH (T, B, H) gradient of the hidden outputs or none; dC (T, B, H) of
// the traced cells or none; dA (T, B, G*H) of the traced activations or none; w_hh (G*H, H);
// rmask (B, H) or none; valid (T, B) bool or none. LN_hh (or none): its gain, raw (T, B, G*H)
// and its statistics hh_mean, hh_rstd (T, B, 1); draw (T, B, G*H) receives d loss / d raw.
// LN_c (or none): ln_c_w, ln_c_b, the statistics c_mean, c_rstd (T, B, 1); d_ctil (T, B, H)
// receives d loss / d LN_c(c). Zoneout (or none): zo_h, zo_c as in the forward (then valid is
// none) and Cn, the cell before zoneout. w_hr (P, H), the projection, or none, with d_hnew
// (T, B, P) receiving d loss / d (W_hr m). dh_last (B, P), dc_last (B, H): the gradients of the
// last processed step's h and c. Writes dpre (T, B, G*H) = d loss / d pre and returns those of h0 and c0.
std::tuple<at::Tensor, at::Tensor> lstm_backward_loop(
    const at::Tensor& act, const at::Tensor& C, const at::Tensor& c0,
    const c10::optional<at::Tensor>& peep, const c10::optional<at::Tensor>& dH,
    const c10::optional<at::Tensor>& dC, const c10::optional<at::Tensor>& dA,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& rmask,
    const c10::optional<at::Tensor>& valid, const c10::optional<at::Tensor>& ln_hh,
    const c10::optional<at::Tensor>& raw, const c10::optional<at::Tensor>& hh_mean,
    const c10::optional<at::Tensor>& hh_rstd, c10::optional<at::Tensor> draw,
    const c10::optional<at::Tensor>& ln_c_w, const c10::optional<at::Tensor>& ln_c_b,
    const c10::optional<at::Tensor>& c_mean, const c10::optional<at::Tensor>& c_rstd,
    c10::optional<at::Tensor> d_ctil, const c10::optional<at::Tensor>& zo_h,
    const c10::optional<at::Tensor>& zo_c, const c10::optional<at::Tensor>& Cn,
    const c10::optional<at::Tensor>& w_hr, c10::optional<at::Tensor> d_hnew,
    const at::Tensor& dh_last, const at::Tensor& dc_last, bool coupled, bool reverse,
    at::Tensor& dpre) {
  const int64_t T = act.size(0), B = act.size(1), H = C.size(2), GH = act.size(2);
  const int64_t P = dh_last.size(1);  // H_out
  const bool proj = has(w_hr);
  TORCH_CHECK(!proj || (has(d_hnew) && d_hnew->is_contiguous()),
              "lstm_backward_loop: a projection needs a contiguous d_hnew");
  TORCH_CHECK(act.is_contiguous() && C.is_contiguous() && dpre.is_contiguous() &&
                  c0.is_contiguous(),
              "lstm_backward_loop: act, C, c0 and dpre must be contiguous");
  TORCH_CHECK(!has(dA) || dA->is_contiguous(), "lstm_backward_loop: dA must be contiguous");
  TORCH_CHECK(!has(ln_c_w) || (c_mean->is_contiguous() && c_rstd->is_contiguous()),
              "lstm_backward_loop: LN_c statistics must be contiguous");
  at::NoGradGuard no_grad;
  at::Tensor dh = dh_last.clone(at::MemoryFormat::Contiguous);
  at::Tensor dc = dc_last.clone(at::MemoryFormat::Contiguous);
  at::Tensor next = at::empty_like(dh);
  at::Tensor dy_scratch = has(ln_c_w) ? at::Tensor() : at::empty_like(dc);
  const bool zoneout = has(zo_h);
  TORCH_CHECK(!zoneout || (has(zo_c) && has(Cn) && Cn->is_contiguous() &&
                           zo_h->is_contiguous() && zo_c->is_contiguous()),
              "lstm_backward_loop: zoneout needs zo_h, zo_c and Cn, contiguous");
  // zoneout: the gradient reaching the new values, and the held shares (h, c)
  at::Tensor dh_new = zoneout ? at::empty_like(dh) : at::Tensor();
  at::Tensor hold_h = zoneout ? at::empty_like(dh) : at::Tensor();
  at::Tensor hold_c = zoneout ? at::empty_like(dc) : at::Tensor();
  const at::Tensor& C_new = zoneout ? *Cn : C;  // what the gates and tanh saw
  at::Tensor dm = proj ? at::empty_like(dc) : at::Tensor();  // d loss / d (o tanh c), (B, H)
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? k : T - 1 - k;  // backward visits the forward's order reversed
    const int64_t prev = reverse ? t + 1 : t - 1;  // the step that ran before t in the forward
    const bool first = prev < 0 || prev >= T;
    at::Tensor dp = dpre.select(0, t);
    at::Tensor dy = has(ln_c_w) ? d_ctil->select(0, t) : dy_scratch;
    AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "lstm_backward_loop", [&] {
      using T_ = scalar_t;
      at::Tensor dh_n = dh;  // d loss / d (the cell's new h), (B, P)
      if (zoneout) {
        split<T_>(dh.data_ptr<T_>(), zo_h->data_ptr<T_>() + t * B * P, dh_new.data_ptr<T_>(),
                  hold_h.data_ptr<T_>(), B * P);
        split<T_>(dc.data_ptr<T_>(), zo_c->data_ptr<T_>() + t * B * H, dc.data_ptr<T_>(),
                  hold_c.data_ptr<T_>(), B * H);  // in place: d_new overwrites d after use
        dh_n = dh_new;
      }
      T_* dh_cell = dh_n.data_ptr<T_>();
      if (proj) {  // h = W_hr m: keep d h_new for dW_hr (held rows: 0) and go back to m
        at::Tensor dhw = d_hnew->select(0, t);
        dhw.copy_(dh_n);
        hold_rows<T_>(valid_row(valid, t), nullptr, dhw.data_ptr<T_>(), B, P);
        at::mm_out(dm, dhw, *w_hr);
        dh_cell = dm.data_ptr<T_>();
      }
      StepGrad<T_> s{act.data_ptr<T_>() + t * B * GH,
                     C_new.data_ptr<T_>() + t * B * H,
                     first ? c0.data_ptr<T_>() : C.data_ptr<T_>() + prev * B * H,
                     ptr_or_null<T_>(peep),
                     has(dA) ? dA->data_ptr<T_>() + t * B * GH : nullptr,
                     ptr_or_null<T_>(ln_c_w),
                     ptr_or_null<T_>(ln_c_b),
                     has(ln_c_w) ? c_mean->data_ptr<T_>() + t * B : nullptr,
                     has(ln_c_w) ? c_rstd->data_ptr<T_>() + t * B : nullptr,
                     valid_row(valid, t),
                     B,
                     GH / H,
                     H,
                     coupled};
      grad_pass1_any<T_>(s, dh_cell, dp.data_ptr<T_>(), dy.data_ptr<T_>());
      at::Tensor dch = dy;
      if (has(ln_c_w)) {
        dch = std::get<0>(at::native_layer_norm_backward(
            dy, C_new.select(0, t), {H}, c_mean->select(0, t), c_rstd->select(0, t), *ln_c_w,
            ln_c_b, {true, false, false}));
      }
      grad_pass2_any<T_>(s, dch.data_ptr<T_>(), dc.data_ptr<T_>(), dp.data_ptr<T_>());
    });
    if (zoneout) dc.add_(hold_c);
    at::Tensor src = dp;  // d loss / d (W_hh h_in): through LN_hh when present
    if (has(ln_hh)) {
      src = draw->select(0, t);
      src.copy_(std::get<0>(at::native_layer_norm_backward(
          dp, raw->select(0, t), {GH}, hh_mean->select(0, t), hh_rstd->select(0, t), *ln_hh, {},
          {true, false, false})));
    }
    // dh_{t-1} = (src W_hh) * rmask + dH_{t-1}
    const bool add_dH = has(dH) && !first;
    if (has(rmask)) {
      at::mm_out(next, src, w_hh);
      next.mul_(*rmask);
      if (add_dH) next.add_(dH->select(0, prev));
    } else if (add_dH) {
      at::addmm_out(next, dH->select(0, prev), src, w_hh);
    } else {
      at::mm_out(next, src, w_hh);
    }
    if (zoneout) next.add_(hold_h);
    if (const bool* v = valid_row(valid, t)) {  // held rows: d h_t reaches h_{t-1} unchanged
      for (int64_t b = 0; b < B; ++b) {
        if (!v[b]) next.select(0, b).add_(dh.select(0, b));
      }
    }
    std::swap(dh, next);
    if (has(dC) && !first) dc.add_(dC->select(0, prev));
  }
  return {dh, dc};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward_loop", &lstm_forward_loop, "fused LSTM forward time loop");
  m.def("lstm_backward_loop", &lstm_backward_loop, "fused LSTM backward time loop");
}
