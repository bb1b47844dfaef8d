// The component model shared by SPD (and, next, APD/VPD): rank-1 subcomponents per decomposed
// layer, the delta component, causal-importance (CI) functions, and the masked forward that
// replaces a named layer of the target model through models::ForwardHooks.
//
// Symbols follow METHODS section 3: a decomposed layer has target weight W: [d_out, d_in],
// subcomponents V: [d_in, C] and U: [C, d_out] with W ~ (V U)^T = sum_c u_c v_c^T, component
// activations h = x V: [..., C], masks m: [..., C], delta mask m_delta: [..., 1].
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"
#include "decomp/ci_functions.hpp"
#include "decomp/ci_transformer.hpp"
#include "models/hooks.hpp"

namespace decomp {

// One layer of the target that is to be decomposed, as the target describes it.
struct LayerSpec {
  std::string name;     // the name the model passes to apply_linear / apply_embedding
  ad::Tensor weight;    // target weight: [d_out, d_in] (linear) or [vocab, d] (embedding)
  bool embedding = false;
  // Non-empty: this layer's weight is the transpose of the named layer's (tied TMS), and its
  // subcomponents are that layer's transposed: V = V_src... see LayerComponents::tied_src.
  std::string tied_to;
};

// Subcomponents of one decomposed layer. For a tied layer (TMS linear2 = linear1^T) there is
// no own storage: V = U_src^T and U = V_src^T, so both layers train the same numbers.
struct LayerComponents {
  std::string name;
  bool embedding = false;
  int64_t d_in = 0, d_out = 0, C = 0;  // embedding: d_in = vocab, d_out = d
  ad::Tensor WT;        // the matrix V U approximates: W^T [d_in, d_out] (embedding: W itself)
  ad::Tensor W;         // target weight as the model uses it (constant)
  ad::Tensor V, U;      // leaves [d_in, C], [C, d_out]; undefined when tied
  int tied_src = -1;    // index of the layer whose V, U this one transposes
};


// Per-layer masks for one masked forward. Undefined members mean: m undefined -> the layer
// is not replaced; m_delta undefined -> no delta component; route undefined -> every example
// routed (route: 0/1 [B, 1, ..., 1], 1 = masked components, 0 = target weights).
struct LayerMask {
  ad::Tensor m, m_delta, route;
};

enum class ComponentInit { normal, kaiming_uniform };

struct ComponentModelOptions {
  int64_t C = 20;
  CIType ci_type = CIType::mlp;
  std::vector<int64_t> ci_hidden = {16};
  // One global CI function over all layers instead of per-layer ones: GlobalCIFunction
  // (a shared MLP on ci_hidden) or, for ci_type transformer (global only), GlobalCITransformer.
  bool global_ci = false;
  CITransformerOptions ci_transformer;
  bool ci_functions = true;  // false: no CI functions (APD decides on-ness by attributions)
  // Columns per component: 1 for SPD's rank-1 subcomponents; APD's rank m, so component c is
  // the columns [c m, (c + 1) m) of V and rows of U, and C above counts columns (C_apd m).
  int64_t group = 1;
  double init_scale = 1.0;  // multiplies the initial V and U
  // Initial V and U, s = init_scale. normal: V ~ N(0, s^2/d_in), U ~ N(0, s^2/C).
  // kaiming_uniform (APD's reference implementation): each component's factors as Kaiming-
  // uniform tensors A_c [d_in, m], B_c [m, d_out] with fan_in d_in m and m d_out, i.e.
  // V ~ U(-b, b) with b = s sqrt(6 / (d_in m)), U ~ U(-b, b) with b = s sqrt(6 / (m d_out)).
  ComponentInit init = ComponentInit::normal;
  ad::DType dtype = ad::DType::f32;
};

class ComponentModel {
 public:
  ComponentModel(const std::vector<LayerSpec>& layers, const ComponentModelOptions& opt, ad::Rng& rng);

  std::vector<LayerComponents> layers;
  std::vector<CIFunction> ci;   // one per layer (empty when global_ci)
  std::unique_ptr<GlobalCI> global_ci;  // set when opt.global_ci
  ComponentModelOptions opt;

  int index_of(const std::string& name) const;  // -1 if not decomposed
  int64_t components() const { return opt.C / opt.group; }  // APD's C; SPD's C
  // While true, h_of / out_of / U_of use V and U detached: passes that only need gradients
  // with respect to masks (the inner steps of sign PGD) skip the dV, dU products.
  // Set through ConstantComponentsScope.
  mutable bool constant_components = false;
  // The layer's effective V [d_in, C] / U [C, d_out] as computation (transposed for tied).
  ad::Tensor h_of(int l, const ad::Tensor& x) const;     // x V  [..., C]
  ad::Tensor out_of(int l, const ad::Tensor& hm) const;  // hm U [..., d_out]
  // U [C, d_out] as stored: the layer's own U, or for a tied layer V_src with trans = true
  struct StoredU {
    ad::Tensor t;
    bool trans;
  };
  StoredU U_of(int l) const;
  ad::Tensor VU(int l) const;                            // V U  [d_in, d_out]
  ad::Tensor target_out(int l, const ad::Tensor& x, const ad::Tensor& bias) const;  // x W^T + b

  // CI pre-sigmoid values z_l [..., C] for every layer from the target's layer inputs. When
  // h_out is given, (*h_out)[l] = x_l V_l for the layers whose CI function computed it (the
  // `mlp` type), undefined for the others.
  std::vector<ad::Tensor> ci_pre_sigmoid(const std::vector<ad::Tensor>& target_inputs,
                                         std::vector<ad::Tensor>* h_out = nullptr) const;

  // Masked replacement of layer l (METHODS 3.1):
  //   out = (h * m) U + m_delta (x W^T - h U) + b = (h * (m - m_delta)) U + m_delta (x W^T) + b
  // and, when routed per example, route * out + (1 - route) (x W^T + b).
  ad::Tensor masked_forward(int l, const ad::Tensor& x, const ad::Tensor& bias, const LayerMask& mask) const;
  // The same from h = x V and xw = x W^T (no bias) already computed; xw may be undefined
  // when the mask has neither a delta nor a route.
  ad::Tensor masked_output(int l, const ad::Tensor& h, const ad::Tensor& xw, const ad::Tensor& bias,
                           const LayerMask& mask) const;
  // A routed layer (mask.route defined; xw defined): h_rows(rows) gives x V on the input rows
  // `rows` [R, C] (the examples with route != 0; the other rows are xw + b), N = the input's rows.
  ad::Tensor routed_output(int l, const std::function<ad::Tensor(const ad::Indices&)>& h_rows, int64_t N,
                           const ad::Tensor& xw, const ad::Tensor& bias, const LayerMask& mask) const;

  // Parameter groups: subcomponents (V, U of untied layers) and CI-function parameters.
  std::vector<ad::Tensor> component_params() const;
  std::vector<std::string> component_param_names() const;
  std::vector<ad::Tensor> ci_params() const;
  std::vector<std::string> ci_param_names() const;
};

struct ConstantComponentsScope {
  explicit ConstantComponentsScope(const ComponentModel& cm) : cm(cm), prev(cm.constant_components) {
    cm.constant_components = true;
  }
  ~ConstantComponentsScope() { cm.constant_components = prev; }
  const ComponentModel& cm;
  bool prev;
};

// Token ids -> one-hot rows [ids..., vocab] (constant). Embedding layers are decomposed as the
// linear map onehot @ W_emb, so they share masks, delta and CI inputs with linear layers.
ad::Tensor one_hot(const ad::Indices& ids, int64_t vocab, ad::DType dt);

// What a masked pass may reuse from the step's one cached target pass. Until the first
// masked layer runs, a masked pass computes exactly what the target pass did, so every
// hooked layer call in that clean prefix can return the recorded output, and the first
// masked layer's input is the recorded one: its h = x V (shared with the CI function, so
// one matmul and one backward serve all passes) and x W^T are reused too.
struct TargetPassCache {
  struct Call {
    std::string name;
    ad::Shape in_shape;  // input (linear) or token-id (embedding) shape
    ad::Tensor out;      // the target's output of this call (constant)
  };
  std::vector<Call> calls;      // every hooked layer call of the target pass, in order
  std::vector<ad::Tensor> xw;   // per decomposed layer: x_l W_l^T (no bias), constant
  std::vector<ad::Tensor> h;    // per decomposed layer: x_l V_l with its graph, filled on first use
};

// ForwardHooks that replace each masked layer with ComponentModel::masked_forward.
// masks[l] with undefined m leaves layer l as the target's. With `cache` set (and the batch
// the cache was recorded on), the clean prefix of the pass reuses the target pass.
struct MaskedHooks : models::ForwardHooks {
  const ComponentModel* cm = nullptr;
  const std::vector<LayerMask>* masks = nullptr;
  TargetPassCache* cache = nullptr;
  std::vector<ad::Tensor>* inputs_out = nullptr;  // optional: each decomposed layer's input
  ad::Tensor linear(const std::string& name, const ad::Tensor& x, const ad::Tensor& weight,
                    const ad::Tensor& bias) override;
  ad::Tensor embedding(const std::string& name, const ad::Indices& ids, const ad::Tensor& weight) override;

 private:
  size_t call_ = 0;     // index of the next hooked call
  bool clean_ = true;   // no masked layer has run yet in this pass
  // The recorded call this one repeats, or nullptr (pass no longer clean, or mismatch).
  const TargetPassCache::Call* recorded(const std::string& name, const ad::Shape& in_shape);
  // Masked replacement of layer l; input() builds the layer's input when it is needed.
  ad::Tensor masked(int l, const TargetPassCache::Call* rec, const ad::Tensor& bias,
                    const std::function<ad::Tensor()>& input);
};

}  // namespace decomp
