// The LSTM time loops of the fused CPU engine, compiled on first use (lstmkit/engines/cpu_loops.py).
//
// They do exactly what the pure-PyTorch loops in lstmkit/engines/fused_lstm.py do (those stay the
// readable reference and the fallback, and the tests compare the two): per step the matmuls and
// layer norms through ATen (oneDNN / MKL speed) and the gate arithmetic as one vectorised pass
// over (B, H) (lstm_kernels.h), so that a step costs its matmul plus a few microseconds instead
// of ~8 eager torch calls.
//
// Tensors are CPU, float32 or float64 (checked by the Python caller, lstmkit/engines/fused_lstm.py).

#include <torch/extension.h>

#include "lstm_kernels.h"

using namespace lstmkit;

// P = H_out (proj_size, else H). xp (T, B, G*H) = LN_ih(W_ih x) + b_ih + b_hh; h0 (B, P), c0
// (B, H); w_t (P, G*H) = W_hh^T; peep (G-1)*H or none; rmask (B, P) recurrent dropout mask or
// none; valid (T, B) bool (lengths) or none; ln_hh (G*H) gain of LN_hh or none, with raw
// (T, B, G*H) receiving W_hh h_in; ln_c_w, ln_c_b (H) LN_c or none; zo_h, zo_c (T, B, H)
// zoneout's share of the new value (lengths folded in; then valid is none); Cn (T, B, H)
// receiving the cell before zoneout and edits (needed by both), or none; w_hr_t (H, P) =
// W_hr^T, the projection, or none (then P = H); reset (T, B) bool or none: the rows that enter
// step t from (h0, c0) instead of the previous step (per-sample resets). Writes A
// (T, B, G*H) activations, C (T, B, H) cells and Hs (T, B, P) hidden states, indexed by time
// (reverse: processed from T-1 down to 0). Interventions (lstmkit.intervene) or none: edit_h
// (T, B, P) and edit_c (T, B, H) bool, True where the state after step t is replaced by
// edit_h_value / edit_c_value (same shapes); they need Cn, which keeps the cell each step
// computed (with or without zoneout).
void lstm_forward_loop(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& c0,
                       const at::Tensor& w_t, const c10::optional<at::Tensor>& peep,
                       const c10::optional<at::Tensor>& rmask,
                       const c10::optional<at::Tensor>& valid,
                       const c10::optional<at::Tensor>& reset,
                       const c10::optional<at::Tensor>& ln_hh, c10::optional<at::Tensor> raw,
                       const c10::optional<at::Tensor>& ln_c_w,
                       const c10::optional<at::Tensor>& ln_c_b,
                       const c10::optional<at::Tensor>& zo_h,
                       const c10::optional<at::Tensor>& zo_c, c10::optional<at::Tensor> Cn,
                       const c10::optional<at::Tensor>& w_hr_t, double eps, bool coupled,
                       bool reverse, at::Tensor& A, at::Tensor& C, at::Tensor& Hs,
                       const c10::optional<at::Tensor>& edit_h,
                       const c10::optional<at::Tensor>& edit_h_value,
                       const c10::optional<at::Tensor>& edit_c,
                       const c10::optional<at::Tensor>& edit_c_value) {
  const int64_t T = xp.size(0), B = xp.size(1), H = c0.size(1), GH = A.size(2);
  const int64_t P = h0.size(1);  // H_out: the projection's size, else H
  const bool proj = has(w_hr_t);
  TORCH_CHECK(A.is_contiguous() && C.is_contiguous() && Hs.is_contiguous() &&
                  (!has(Cn) || Cn->is_contiguous()) && c0.is_contiguous() && h0.is_contiguous(),
              "lstm_forward_loop: A, C, Hs, Cn, h0 and c0 must be contiguous");
  const bool zoneout = has(zo_h);
  TORCH_CHECK(!zoneout || (has(zo_c) && has(Cn) && zo_h->is_contiguous() &&
                           zo_c->is_contiguous()),
              "lstm_forward_loop: zoneout needs zo_h, zo_c (contiguous) and Cn");
  check_flags(valid, T, B, "lstm_forward_loop: valid");
  check_flags(reset, T, B, "lstm_forward_loop: reset");
  TORCH_CHECK((!has(edit_h) && !has(edit_c)) || has(Cn), "lstm_forward_loop: edits need Cn");
  TORCH_CHECK(has(edit_h) == has(edit_h_value) && has(edit_c) == has(edit_c_value),
              "lstm_forward_loop: each edit mask needs its values");
  at::NoGradGuard no_grad;
  at::Tensor h = h0, c = c0;
  at::Tensor h_in = has(rmask) ? at::empty_like(h0) : at::Tensor();
  at::Tensor h_new = zoneout ? at::empty_like(h0) : at::Tensor();
  at::Tensor m = proj ? at::empty_like(c0) : at::Tensor();  // o tanh(c) before W_hr
  // the state entering a step with resets: the previous one, with rows from (h0, c0)
  at::Tensor h_e = has(reset) ? at::empty_like(h0) : at::Tensor();
  at::Tensor c_e = has(reset) ? at::empty_like(c0) : at::Tensor();
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? T - 1 - k : k;
    if (const bool* r = reset_row(reset, t, B)) {
      h_e.copy_(h);
      c_e.copy_(c);
      AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "lstm_forward_reset", [&] {
        copy_rows<scalar_t>(r, h0.data_ptr<scalar_t>(), h_e.data_ptr<scalar_t>(), B, P);
        copy_rows<scalar_t>(r, c0.data_ptr<scalar_t>(), c_e.data_ptr<scalar_t>(), B, H);
      });
      h = h_e;
      c = c_e;
    }
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
    at::Tensor c_n = has(Cn) ? Cn->select(0, t) : c_t, h_n = zoneout ? h_new : h_t;
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
      } else if (has(Cn)) {  // kept apart for the edits below: the state is the new cell
        std::copy(c_n.data_ptr<T_>(), c_n.data_ptr<T_>() + B * H, c_t.data_ptr<T_>());
      }
    });
    // interventions: what every later reader of the state sees (h_t came from the unedited c_t)
    if (has(edit_h)) h_t.copy_(at::where(edit_h->select(0, t), edit_h_value->select(0, t), h_t));
    if (has(edit_c)) c_t.copy_(at::where(edit_c->select(0, t), edit_c_value->select(0, t), c_t));
    h = h_t;
    c = c_t;
  }
}

// The backward time loop (P = H_out, as in the forward). act (T, B, G*H) activations and C
// (T, B, H) cells from the forward; c0 (B, H); peep or none; dH (T, B, P) gradient of the hidden
// outputs or none; dC (T, B, H) of the traced cells or none; dA (T, B, G*H) of the traced
// activations or none; w_hh (G*H, P); rmask (B, P) or none; valid (T, B) bool or none; reset
// (T, B) bool or none, as in the forward. LN_hh (or none): its gain, raw (T, B, G*H)
// and its statistics hh_mean, hh_rstd (T, B, 1); draw (T, B, G*H) receives d loss / d raw and
// ln_hh_grad (G*H, zeros on entry) the gain's gradient. LN_c (or none): ln_c_w, ln_c_b, the
// statistics c_mean, c_rstd (T, B, 1); ln_c_grad (2, H), zeros on entry, receives the gradients
// of the gain and the shift. Zoneout (or none): zo_h, zo_c as in the forward (then valid is
// none). Cn, the cell before zoneout and edits, or none. w_hr (P, H), the projection, or none,
// with d_hnew (T, B, P) receiving d loss / d (W_hr m). dh_last (B, P), dc_last (B, H): the
// gradients of the last processed step's h and c. Writes dpre (T, B, G*H) = d loss / d pre and
// returns those of h0 and c0.
// Interventions (or none): edit_h (T, B, P), edit_c (T, B, H) bool as in the forward; where set,
// the gradient reaching the state goes to d_edit_h / d_edit_c (same shapes, the values'
// gradients) instead of to what the step computed.
std::tuple<at::Tensor, at::Tensor> lstm_backward_loop(
    const at::Tensor& act, const at::Tensor& C, const at::Tensor& c0,
    const c10::optional<at::Tensor>& peep, const c10::optional<at::Tensor>& dH,
    const c10::optional<at::Tensor>& dC, const c10::optional<at::Tensor>& dA,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& rmask,
    const c10::optional<at::Tensor>& valid, const c10::optional<at::Tensor>& reset,
    const c10::optional<at::Tensor>& ln_hh,
    const c10::optional<at::Tensor>& raw, const c10::optional<at::Tensor>& hh_mean,
    const c10::optional<at::Tensor>& hh_rstd, c10::optional<at::Tensor> draw,
    c10::optional<at::Tensor> ln_hh_grad, const c10::optional<at::Tensor>& ln_c_w,
    const c10::optional<at::Tensor>& ln_c_b,
    const c10::optional<at::Tensor>& c_mean, const c10::optional<at::Tensor>& c_rstd,
    c10::optional<at::Tensor> ln_c_grad, const c10::optional<at::Tensor>& zo_h,
    const c10::optional<at::Tensor>& zo_c, const c10::optional<at::Tensor>& Cn,
    const c10::optional<at::Tensor>& w_hr, c10::optional<at::Tensor> d_hnew,
    const at::Tensor& dh_last, const at::Tensor& dc_last, bool coupled, bool reverse,
    at::Tensor& dpre, const c10::optional<at::Tensor>& edit_h,
    const c10::optional<at::Tensor>& edit_c, c10::optional<at::Tensor> d_edit_h,
    c10::optional<at::Tensor> d_edit_c) {
  const int64_t T = act.size(0), B = act.size(1), H = C.size(2), GH = act.size(2);
  const int64_t P = dh_last.size(1);  // H_out
  const bool proj = has(w_hr);
  TORCH_CHECK(!proj || (has(d_hnew) && d_hnew->is_contiguous()),
              "lstm_backward_loop: a projection needs a contiguous d_hnew");
  TORCH_CHECK(act.is_contiguous() && C.is_contiguous() && dpre.is_contiguous() &&
                  c0.is_contiguous(),
              "lstm_backward_loop: act, C, c0 and dpre must be contiguous");
  TORCH_CHECK(!has(dA) || dA->is_contiguous(), "lstm_backward_loop: dA must be contiguous");
  TORCH_CHECK(!has(Cn) || Cn->is_contiguous(), "lstm_backward_loop: Cn must be contiguous");
  TORCH_CHECK((!has(edit_h) || has(d_edit_h)) && (!has(edit_c) || has(d_edit_c)),
              "lstm_backward_loop: each edit mask needs a buffer for its values' gradient");
  check_flags(valid, T, B, "lstm_backward_loop: valid");
  check_flags(reset, T, B, "lstm_backward_loop: reset");
  TORCH_CHECK(!has(ln_c_w) || (c_mean->is_contiguous() && c_rstd->is_contiguous()),
              "lstm_backward_loop: LN_c statistics must be contiguous");
  at::NoGradGuard no_grad;
  at::Tensor dh = dh_last.clone(at::MemoryFormat::Contiguous);
  at::Tensor dc = dc_last.clone(at::MemoryFormat::Contiguous);
  at::Tensor next = at::empty_like(dh);
  at::Tensor dy = at::empty_like(dc);  // d loss / d LN_c(c_t) (or c_t), (B, H)
  const bool zoneout = has(zo_h);
  TORCH_CHECK(!zoneout || (has(zo_c) && has(Cn) && Cn->is_contiguous() &&
                           zo_h->is_contiguous() && zo_c->is_contiguous()),
              "lstm_backward_loop: zoneout needs zo_h, zo_c and Cn, contiguous");
  // zoneout: the gradient reaching the new values, and the held shares (h, c)
  at::Tensor dh_new = zoneout ? at::empty_like(dh) : at::Tensor();
  at::Tensor hold_h = zoneout ? at::empty_like(dh) : at::Tensor();
  at::Tensor hold_c = zoneout ? at::empty_like(dc) : at::Tensor();
  const at::Tensor& C_new = has(Cn) ? *Cn : C;  // what the gates and tanh saw
  at::Tensor dm = proj ? at::empty_like(dc) : at::Tensor();  // d loss / d (o tanh c), (B, H)
  // resets: the cell entering a reset step, and the gradients that reach (h0, c0) there
  at::Tensor c_e = has(reset) ? at::empty_like(dc) : at::Tensor();
  at::Tensor to_h0 = has(reset) ? at::zeros_like(dh) : at::Tensor();
  at::Tensor to_c0 = has(reset) ? at::zeros_like(dc) : at::Tensor();
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? k : T - 1 - k;  // backward visits the forward's order reversed
    const int64_t prev = reverse ? t + 1 : t - 1;  // the step that ran before t in the forward
    const bool first = prev < 0 || prev >= T;
    at::Tensor dp = dpre.select(0, t);
    const bool* r = reset_row(reset, t, B);  // null unless some row enters step t afresh
    if (has(edit_h)) {  // an edited unit's gradient goes to its value, not to the step
      at::Tensor m = edit_h->select(0, t);
      d_edit_h->select(0, t).copy_(at::where(m, dh, 0.0));
      dh.masked_fill_(m, 0.0);
    }
    if (has(edit_c)) {
      at::Tensor m = edit_c->select(0, t);
      d_edit_c->select(0, t).copy_(at::where(m, dc, 0.0));
      dc.masked_fill_(m, 0.0);
    }
    AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "lstm_backward_loop", [&] {
      using T_ = scalar_t;
      const T_* c_prev = first ? c0.data_ptr<T_>() : C.data_ptr<T_>() + prev * B * H;
      if (r) {  // the cell this step read: c_{t-1}, with c0's rows where reset
        std::copy(c_prev, c_prev + B * H, c_e.data_ptr<T_>());
        copy_rows<T_>(r, c0.data_ptr<T_>(), c_e.data_ptr<T_>(), B, H);
        c_prev = c_e.data_ptr<T_>();
      }
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
                     c_prev,
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
      if (has(ln_c_w)) {  // and the gain / shift gradients, summed over the steps
        const bool shift = has(ln_c_b);
        auto g = at::native_layer_norm_backward(dy, C_new.select(0, t), {H}, c_mean->select(0, t),
                                                c_rstd->select(0, t), *ln_c_w, ln_c_b,
                                                {true, true, shift});
        dch = std::get<0>(g);
        ln_c_grad->select(0, 0).add_(std::get<1>(g));
        if (shift) ln_c_grad->select(0, 1).add_(std::get<2>(g));
      }
      grad_pass2_any<T_>(s, dch.data_ptr<T_>(), dc.data_ptr<T_>(), dp.data_ptr<T_>());
    });
    if (zoneout) dc.add_(hold_c);
    at::Tensor src = dp;  // d loss / d (W_hh h_in): through LN_hh when present
    if (has(ln_hh)) {
      src = draw->select(0, t);
      auto g = at::native_layer_norm_backward(dp, raw->select(0, t), {GH}, hh_mean->select(0, t),
                                              hh_rstd->select(0, t), *ln_hh, {},
                                              {true, true, false});
      src.copy_(std::get<0>(g));
      ln_hh_grad->add_(std::get<1>(g));
    }
    // dh_{t-1} = (src W_hh) * rmask + dH_{t-1}
    const bool add_dH = has(dH) && !first;
    const bool fold_dH = add_dH && r == nullptr;  // with resets dH_{t-1} is added after them
    if (has(rmask)) {
      at::mm_out(next, src, w_hh);
      next.mul_(*rmask);
      if (fold_dH) next.add_(dH->select(0, prev));
    } else if (fold_dH) {
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
    if (r) {  // rows that entered step t from (h0, c0): their gradient goes there
      AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "lstm_backward_reset", [&] {
        move_rows<scalar_t>(r, next.data_ptr<scalar_t>(), to_h0.data_ptr<scalar_t>(), B, P);
        move_rows<scalar_t>(r, dc.data_ptr<scalar_t>(), to_c0.data_ptr<scalar_t>(), B, H);
      });
      if (add_dH) next.add_(dH->select(0, prev));
    }
    std::swap(dh, next);
    if (has(dC) && !first) dc.add_(dC->select(0, prev));
  }
  if (has(reset)) {
    dh.add_(to_h0);
    dc.add_(to_c0);
  }
  return {dh, dc};
}

// stream_step.cpp: one step of a whole stack (lstmkit's streams), documented there
void bind_stream_step(pybind11::module& m);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward_loop", &lstm_forward_loop, "fused LSTM forward time loop");
  m.def("lstm_backward_loop", &lstm_backward_loop, "fused LSTM backward time loop");
  bind_stream_step(m);
}
