// One time step of a whole stack, for lstmkit's streams (lstmkit/nn/stream.py, prepared by
// lstmkit/engines/stream_step.py): all layers in one call, so that a token costs its matmuls plus
// a few microseconds instead of ~8 eager torch calls per layer.
//
// Same equations as lstmkit/cells (lstm.py, gru.py, rnn.py); the LSTM's gate arithmetic is the
// fused engine's own kernel (lstm_kernels.h). The tests hold a stream against the whole-sequence
// forward of the reference engine (float64, 1e-10).
//
// Tensors are CPU, float32 or float64 (checked by the Python caller); the buffers contiguous
// (checked in make_stream_step).

#include <torch/extension.h>

#include <vector>

#include "lstm_kernels.h"

using namespace lstmkit;

namespace {

enum Kind : int64_t { KIND_LSTM = 0, KIND_GRU = 1, KIND_RNN_TANH = 2, KIND_RNN_RELU = 3 };

inline bool given(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

// lstmkit/cells/gru.py's gru_pointwise, in its gate order r, z, n (lstmkit.cells.gates.GRU_GATES;
// CompiledStep.prepare checks the cell's layout is that order)
template <typename T>
void gru_step(T* a, const T* hp, T* h, int64_t B, int64_t H) {
  // a (B, 3H) holds xp = W_ih x + b_ih on entry and r, z, n on return; hp (B, 3H) = W_hh h + b_hh
  for (int64_t b = 0; b < B; ++b) {
    T* ab = a + b * 3 * H;
    const T* hb = hp + b * 3 * H;
    T* out = h + b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      T r = sigmoid(ab[j] + hb[j]);
      T z = sigmoid(ab[H + j] + hb[H + j]);
      T n = std::tanh(ab[2 * H + j] + r * hb[2 * H + j]);
      ab[j] = r;
      ab[H + j] = z;
      ab[2 * H + j] = n;
      out[j] = (T(1) - z) * n + z * out[j];
    }
  }
}

// out (B, I + P) = [x | h] for x (B, I) and h (B, P), all contiguous (at::cat or two narrow
// copies cost more than this step's arithmetic at small sizes)
template <typename T>
void concat_rows(const T* x, const T* h, T* out, int64_t B, int64_t I, int64_t P) {
  for (int64_t b = 0; b < B; ++b) {
    std::copy(x + b * I, x + (b + 1) * I, out + b * (I + P));
    std::copy(h + b * P, h + (b + 1) * P, out + b * (I + P) + I);
  }
}

// lstmkit/cells/rnn.py's rnn_pointwise: tanh or relu of the one block
template <typename T>
void rnn_step(const T* pre, T* h, int64_t n, bool relu) {
  if (relu) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) h[j] = pre[j] > T(0) ? pre[j] : T(0);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) h[j] = std::tanh(pre[j]);
  }
}

}  // namespace

// kind: 0 LSTM, 1 GRU, 2 RNN (tanh), 3 RNN (relu); coupled: the CIFG LSTM (gates f, g, o).
// Per layer l (every list has one entry per layer; an empty tensor means "none"):
//   w[l]    LSTM / RNN: (I_l + P, G*H) = [W_ih | W_hh]^T;  GRU: (I_l, 3H) = W_ih^T
//   w2[l]   GRU: (H, 3H) = W_hh^T;  others: empty
//   b[l]    (G*H): LSTM / RNN: b_ih + b_hh;  GRU: b_ih;  empty without bias
//   b2[l]   GRU: (3H) b_hh or empty;  others: empty
//   peep[l] LSTM peephole weights ((G-1)*H, stacked i, f, o) or empty
//   w_hr[l] LSTM projection (H, P) = W_hr^T or empty (then P = H)
//   xh[l]   scratch: LSTM / RNN (B, I_l + P), [x | h] for the one matmul;  GRU: (B, 3H), W_hh h
//   act[l]  (B, G*H): the gate activations of the last step (a step's trace)
//   m[l]    (B, H) scratch for o tanh(c) before the projection, or empty
//   h[l]    (B, P) and c[l] (B, H) (LSTM; others: empty): the state, advanced in place
// The object keeps these (the same tensors as the caller's: it reads and writes the state
// buffers the caller holds), so that a step passes one tensor from Python, not thirteen lists.
struct StreamStep {
  int64_t kind;
  bool coupled;
  std::vector<at::Tensor> w, w2, b, b2, peep, w_hr, xh, act, m, h, c;

  // x (B, I) -> the last layer's new h as a fresh (B, P) tensor (the caller may keep it)
  at::Tensor step(const at::Tensor& x_in) {
    at::NoGradGuard no_grad;
    const at::Tensor x = x_in.contiguous();
    const size_t L = w.size();
    const int64_t B = x.size(0);
    at::Tensor input = x;  // (B, I_l): the layer's input, the previous layer's new h after 0
    for (size_t l = 0; l < L; ++l) {
      at::Tensor& a = act[l];
      const int64_t I = input.size(1), P = h[l].size(1);
      if (kind == KIND_GRU) {
        const int64_t H = P;
        if (given(b[l])) {
          at::addmm_out(a, b[l], input, w[l]);
        } else {
          at::mm_out(a, input, w[l]);
        }
        if (given(b2[l])) {
          at::addmm_out(xh[l], b2[l], h[l], w2[l]);
        } else {
          at::mm_out(xh[l], h[l], w2[l]);
        }
        AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_step_gru", [&] {
          gru_step<scalar_t>(a.data_ptr<scalar_t>(), xh[l].data_ptr<scalar_t>(),
                             h[l].data_ptr<scalar_t>(), B, H);
        });
      } else {
        // [x | h] (B, I + P), then one matmul with [W_ih | W_hh]^T: the step's only product
        AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_step_concat", [&] {
          concat_rows<scalar_t>(input.data_ptr<scalar_t>(), h[l].data_ptr<scalar_t>(),
                                xh[l].data_ptr<scalar_t>(), B, I, P);
        });
        if (given(b[l])) {
          at::addmm_out(a, b[l], xh[l], w[l]);
        } else {
          at::mm_out(a, xh[l], w[l]);
        }
        if (kind == KIND_LSTM) {
          const int64_t H = c[l].size(1);
          const bool proj = given(w_hr[l]);
          at::Tensor& out = proj ? m[l] : h[l];  // o tanh(c): h itself, or before W_hr
          AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_step_lstm", [&] {
            using T_ = scalar_t;
            // c is read then written per element (c_prev and c_out alias); h_prev is read only
            // for held rows, and there are none here (valid = null)
            lstm_step_any<T_>(a.data_ptr<T_>(), c[l].data_ptr<T_>(), nullptr,
                              c[l].data_ptr<T_>(), out.data_ptr<T_>(),
                              given(peep[l]) ? peep[l].data_ptr<T_>() : nullptr, nullptr, B, H,
                              coupled);
          });
          if (proj) at::mm_out(h[l], m[l], w_hr[l]);
        } else {
          AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_step_rnn", [&] {
            rnn_step<scalar_t>(a.data_ptr<scalar_t>(), h[l].data_ptr<scalar_t>(), B * P,
                               kind == KIND_RNN_RELU);
          });
        }
      }
      input = h[l];
    }
    return input.clone();
  }
};

std::shared_ptr<StreamStep> make_stream_step(
    int64_t kind, bool coupled, std::vector<at::Tensor> w, std::vector<at::Tensor> w2,
    std::vector<at::Tensor> b, std::vector<at::Tensor> b2, std::vector<at::Tensor> peep,
    std::vector<at::Tensor> w_hr, std::vector<at::Tensor> xh, std::vector<at::Tensor> act,
    std::vector<at::Tensor> m, std::vector<at::Tensor> h, std::vector<at::Tensor> c) {
  const size_t L = w.size();
  TORCH_CHECK(L > 0 && w2.size() == L && b.size() == L && b2.size() == L && peep.size() == L &&
                  w_hr.size() == L && xh.size() == L && act.size() == L && m.size() == L &&
                  h.size() == L && c.size() == L,
              "StreamStep: every per-layer list needs one entry per layer");
  for (size_t l = 0; l < L; ++l) {
    TORCH_CHECK(h[l].is_contiguous() && act[l].is_contiguous() && xh[l].is_contiguous() &&
                    (!given(c[l]) || c[l].is_contiguous()),
                "StreamStep: the state and scratch buffers must be contiguous");
  }
  auto s = std::make_shared<StreamStep>();
  *s = StreamStep{kind, coupled, w, w2, b, b2, peep, w_hr, xh, act, m, h, c};
  return s;
}

void bind_stream_step(pybind11::module& m) {
  pybind11::class_<StreamStep, std::shared_ptr<StreamStep>>(m, "StreamStep")
      .def("step", &StreamStep::step, "x (B, I) -> the last layer's new h (B, P)");
  m.def("make_stream_step", &make_stream_step, "prepared weights and buffers of a stream");
}
