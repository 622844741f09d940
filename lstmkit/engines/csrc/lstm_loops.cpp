// The LSTM time loops of the fused CPU engine, compiled on first use (lstmkit/engines/cpu_loops.py).
//
// They do exactly what the pure-PyTorch loops in lstmkit/engines/fused_lstm.py do (those stay the
// readable reference and the fallback, and the tests compare the two): per step one matmul through
// ATen (oneDNN / MKL speed) and the gate arithmetic as one pass over (B, H) written here, so that
// the step costs its matmul plus a few microseconds instead of ~8 eager torch calls.
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

// One step of lstmkit.cells.lstm.lstm_pointwise_ + lstm_output_ (no layer norm, no projection):
// a (B, G*H) holds pre on entry and the activations on return; writes c_t and h_t.
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
    if (valid && !valid[b]) {
      std::copy(cp, cp + H, cb);
      std::copy(h_prev + b * H, h_prev + (b + 1) * H, hb);
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

// One step of the backward (lstmkit.engines.fused_lstm.lstm_backward without layer norm,
// projection or zoneout), straight from the saved activations. With dh = d loss / d h_t and
// dc = d loss / d c_t carried in, tc = tanh(c_t), dA the trace's own gradient (or 0):
//   dpre_o = (dh tc + dA_o) o (1 - o)
//   dcn    = dc + dh o (1 - tc^2) + w_co dpre_o
//   dpre_i = (dcn g + dA_i) i (1 - i)                  [coupled: no i block]
//   dpre_f = (dcn c_{t-1} + dA_f) f (1 - f)            [coupled: dcn (c_{t-1} - g)]
//   dpre_g = (dcn i + dA_g) (1 - g^2)                  [coupled: i = 1 - f]
//   dc    <- dcn f + w_ci dpre_i + w_cf dpre_f          (in place)
// A row past its sequence's end (valid[b] false) held its state: dpre = 0 and dc passes on.
template <typename T, bool PEEP, bool COUPLED, bool TRACE>
void lstm_grad_step(const T* act, const T* c, const T* c_prev, const T* peep, const T* dA,
                    const bool* valid, const T* dh, T* dc, T* dpre, int64_t B, int64_t H) {
  constexpr int G = COUPLED ? 3 : 4;
  constexpr int F = COUPLED ? 0 : 1;
  for (int64_t b = 0; b < B; ++b) {
    const T* ab = act + b * G * H;
    const T* dab = TRACE ? dA + b * G * H : nullptr;
    T* db = dpre + b * G * H;
    if (valid && !valid[b]) {
      std::fill(db, db + G * H, T(0));
      continue;
    }
    const T* cb = c + b * H;
    const T* cpb = c_prev + b * H;
    const T* dhb = dh + b * H;
    T* dcb = dc + b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T f = ab[F * H + j], g = ab[(F + 1) * H + j], o = ab[(F + 2) * H + j];
      const T i = COUPLED ? T(1) - f : ab[j];
      const T tc = std::tanh(cb[j]);
      T d_o = dhb[j] * tc;
      if constexpr (TRACE) d_o += dab[(F + 2) * H + j];
      const T dpo = d_o * o * (T(1) - o);
      T dcn = dcb[j] + dhb[j] * o * (T(1) - tc * tc);
      if constexpr (PEEP) dcn += peep[(G - 2) * H + j] * dpo;
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
      db[(F + 2) * H + j] = dpo;
      dcb[j] = dcp;
    }
  }
}

template <typename T, bool PEEP, bool COUPLED>
void grad_step_trace(const T* act, const T* c, const T* cp, const T* peep, const T* dA,
                     const bool* v, const T* dh, T* dc, T* dpre, int64_t B, int64_t H) {
  dA ? lstm_grad_step<T, PEEP, COUPLED, true>(act, c, cp, peep, dA, v, dh, dc, dpre, B, H)
     : lstm_grad_step<T, PEEP, COUPLED, false>(act, c, cp, peep, dA, v, dh, dc, dpre, B, H);
}

template <typename T>
void grad_step_any(const T* act, const T* c, const T* cp, const T* peep, const T* dA,
                   const bool* v, const T* dh, T* dc, T* dpre, int64_t B, int64_t H,
                   bool coupled) {
  if (peep != nullptr) {
    coupled ? grad_step_trace<T, true, true>(act, c, cp, peep, dA, v, dh, dc, dpre, B, H)
            : grad_step_trace<T, true, false>(act, c, cp, peep, dA, v, dh, dc, dpre, B, H);
  } else {
    coupled ? grad_step_trace<T, false, true>(act, c, cp, peep, dA, v, dh, dc, dpre, B, H)
            : grad_step_trace<T, false, false>(act, c, cp, peep, dA, v, dh, dc, dpre, B, H);
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

// xp (T, B, G*H) = W_ih x + b_ih + b_hh; h0, c0 (B, H); w_t (H, G*H) = W_hh^T; peep (G-1)*H or
// none; rmask (B, H) recurrent dropout mask or none; valid (T, B) bool (lengths) or none. Writes A (T, B, G*H) activations, C (T, B, H)
// cells and Hs (T, B, H) hidden states, indexed by time (reverse: processed from T-1 down to 0).
void lstm_forward_loop(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& c0,
                       const at::Tensor& w_t, const c10::optional<at::Tensor>& peep,
                       const c10::optional<at::Tensor>& rmask,
                       const c10::optional<at::Tensor>& valid, bool coupled, bool reverse,
                       at::Tensor& A, at::Tensor& C, at::Tensor& Hs) {
  const int64_t T = xp.size(0), B = xp.size(1), H = c0.size(1);
  at::NoGradGuard no_grad;
  at::Tensor h = h0, c = c0;
  const bool masked = rmask.has_value() && rmask->defined();
  at::Tensor h_in = masked ? at::empty_like(h0) : at::Tensor();
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? T - 1 - k : k;
    at::Tensor a = A.select(0, t);
    if (masked) {
      at::mul_out(h_in, h, *rmask);
      at::addmm_out(a, xp.select(0, t), h_in, w_t);
    } else {
      at::addmm_out(a, xp.select(0, t), h, w_t);
    }
    at::Tensor c_t = C.select(0, t), h_t = Hs.select(0, t);
    AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "lstm_forward_loop", [&] {
      lstm_step_any<scalar_t>(a.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                              h.data_ptr<scalar_t>(), c_t.data_ptr<scalar_t>(),
                              h_t.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(peep),
                              valid_row(valid, t), B, H, coupled);
    });
    h = h_t;
    c = c_t;
  }
}

// The backward time loop. act (T, B, G*H) activations and C (T, B, H) cells from the forward;
// c0 (B, H); peep or none; dH (T, B, H) gradient of the hidden outputs or none; dC (T, B, H) of
// the traced cells or none; dA (T, B, G*H) of the traced activations or none; w_hh (G*H, H);
// rmask (B, H) or none; valid (T, B) bool or none; dh_last, dc_last (B, H): the gradients of the last processed step's h and
// c. Writes dpre (T, B, G*H) = d loss / d (xp + W_hh h) and returns the gradients of h0 and c0.
std::tuple<at::Tensor, at::Tensor> lstm_backward_loop(
    const at::Tensor& act, const at::Tensor& C, const at::Tensor& c0,
    const c10::optional<at::Tensor>& peep, const c10::optional<at::Tensor>& dH,
    const c10::optional<at::Tensor>& dC, const c10::optional<at::Tensor>& dA,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& rmask,
    const c10::optional<at::Tensor>& valid, const at::Tensor& dh_last, const at::Tensor& dc_last,
    bool coupled, bool reverse, at::Tensor& dpre) {
  const int64_t T = act.size(0), B = act.size(1), H = C.size(2);
  TORCH_CHECK(act.is_contiguous() && C.is_contiguous() && dpre.is_contiguous() &&
                  c0.is_contiguous(),
              "lstm_backward_loop: act, C, c0 and dpre must be contiguous");
  at::NoGradGuard no_grad;
  const bool has_dH = dH.has_value() && dH->defined();
  const bool has_dC = dC.has_value() && dC->defined();
  const bool masked = rmask.has_value() && rmask->defined();
  const bool has_dA = dA.has_value() && dA->defined();
  TORCH_CHECK(!has_dA || dA->is_contiguous(), "lstm_backward_loop: dA must be contiguous");
  at::Tensor dh = dh_last.clone(at::MemoryFormat::Contiguous);
  at::Tensor dc = dc_last.clone(at::MemoryFormat::Contiguous);
  at::Tensor next = at::empty_like(dh);
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? k : T - 1 - k;  // backward visits the forward's order reversed
    const int64_t prev = reverse ? t + 1 : t - 1;  // the step that ran before t in the forward
    const bool first = prev < 0 || prev >= T;
    at::Tensor dp = dpre.select(0, t);
    AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "lstm_backward_loop", [&] {
      const int64_t GH = act.size(2);
      const scalar_t* cp = first ? c0.data_ptr<scalar_t>() : C.data_ptr<scalar_t>() + prev * B * H;
      const scalar_t* dAt = has_dA ? dA->data_ptr<scalar_t>() + t * B * GH : nullptr;
      grad_step_any<scalar_t>(act.data_ptr<scalar_t>() + t * B * GH,
                              C.data_ptr<scalar_t>() + t * B * H, cp, ptr_or_null<scalar_t>(peep),
                              dAt, valid_row(valid, t), dh.data_ptr<scalar_t>(),
                              dc.data_ptr<scalar_t>(), dp.data_ptr<scalar_t>(), B, H, coupled);
    });
    // dh_{t-1} = (dpre_t W_hh) * rmask + dH_{t-1}
    if (masked) {
      at::mm_out(next, dp, w_hh);
      next.mul_(*rmask);
      if (has_dH && !first) next.add_(dH->select(0, prev));
    } else if (has_dH && !first) {
      at::addmm_out(next, dH->select(0, prev), dp, w_hh);
    } else {
      at::mm_out(next, dp, w_hh);
    }
    if (const bool* v = valid_row(valid, t)) {  // held rows: d h_t reaches h_{t-1} unchanged
      for (int64_t b = 0; b < B; ++b) {
        if (!v[b]) next.select(0, b).add_(dh.select(0, b));
      }
    }
    std::swap(dh, next);
    if (has_dC && !first) dc.add_(dC->select(0, prev));
  }
  return {dh, dc};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward_loop", &lstm_forward_loop, "fused LSTM forward time loop");
  m.def("lstm_backward_loop", &lstm_backward_loop, "fused LSTM backward time loop");
}
