// 2-D convolutions for singan_ms on CPU through oneDNN's optimised kernels, as MindSpore AOT custom operators.
//
// Why: MindSpore 2.10's CPU Conv2D hands its bundled oneDNN plain OIHW weights, so at AVX-512 every fast kernel
// declines and a reference convolution runs (docs/benchmarks.md); capped at AVX2 it runs im2col + GEMM, 2-3x
// slower than torch. These operators call the same oneDNN C API the way torch does: activations reordered to
// the blocked layout the primitive asks for, weights likewise, the primitive's own choice of kernel
// (jit:avx512_core direct on AVX-512 hosts, as torch's verbose log shows), result reordered back to NCHW.
//
// Which oneDNN: a private copy of MindSpore's own libdnnl.so.3 (singan_ms/native.py copies it into the kernel
// cache and passes its path to SinganConvInit). A copy, loaded RTLD_LOCAL, because a oneDNN instance latches
// ONEDNN_MAX_CPU_ISA at its first primitive for the life of the process and MindSpore's instance is
// deliberately capped at AVX2 (singan_ms/device.py); the copy latches the user's own environment instead.
// Nothing here includes oneDNN's headers: the few C API entry points and constants used are declared below,
// with the values of oneDNN 3.x's stable C ABI.
//
// MindSpore's copy is built with the threadpool runtime, so the stream gets a thread pool implemented here:
// persistent workers, OMP_NUM_THREADS of them if set (msrun sets 1 per worker), else all CPUs. MindSpore may
// launch independent kernels concurrently; the primitive cache is locked, every call gets its own buffers and
// scratchpad, and a parallel region that finds the pool busy runs inline (same result: oneDNN splits work by
// (ithr, nthr), not by which thread runs it).
#include <dlfcn.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "aot.h"
#include "timing.h"

namespace {

// ---- the oneDNN 3.x C API subset (opaque handles, constants, entry points) ----
using status_t = int;
using handle = void*;
using dims_t = int64_t[12];  // DNNL_MAX_NDIMS
struct exec_arg_t {
  int arg;
  handle memory;
};
constexpr int kF32 = 3;                                  // dnnl_f32
constexpr int kTagAny = 1, kTagA = 2, kTagAbcd = 5;      // dnnl_format_tag_any, dnnl_a, dnnl_abcd (nchw / oihw)
constexpr int kForwardTraining = 64;                     // dnnl_forward_training
constexpr int kConvDirect = 1;                           // dnnl_convolution_direct
constexpr int kEngineCpu = 1;                            // dnnl_cpu
constexpr int kScratchpadUser = 1;                       // dnnl_scratchpad_mode_user
constexpr int kQuerySrc = 129, kQueryDiffSrc = 130, kQueryWeights = 131, kQueryDiffWeights = 132, kQueryDst = 133,
              kQueryDiffDst = 134, kQueryScratchpad = 136;  // dnnl_query_*_md (some_md = 128, workspace 135)
constexpr int kArgFrom = 1, kArgTo = 17;                // DNNL_ARG_FROM / DNNL_ARG_TO
constexpr int kArgSrc = 1, kArgDst = 17, kArgWeights = 33, kArgBias = 41, kArgScratchpad = 80, kArgDiffSrc = 129,
              kArgDiffDst = 145, kArgDiffWeights = 161, kArgDiffBias = 169;

struct Api {
  status_t (*engine_create)(handle*, int, size_t);
  status_t (*stream_create)(handle*, handle, void*);  // dnnl_threadpool_interop_stream_create
  status_t (*set_max_concurrency)(int);
  status_t (*md_create_with_tag)(handle*, int, const dims_t, int, int);
  int (*md_equal)(const void*, const void*);
  size_t (*md_get_size)(const void*);
  status_t (*attr_create)(handle*);
  status_t (*attr_set_scratchpad_mode)(handle, int);
  status_t (*conv_fwd_pd)(handle*, handle, int, int, const void*, const void*, const void*, const void*,
                          const dims_t, const dims_t, const dims_t, const dims_t, const void*);
  status_t (*conv_bwd_data_pd)(handle*, handle, int, const void*, const void*, const void*, const dims_t,
                               const dims_t, const dims_t, const dims_t, const void*, const void*);
  status_t (*conv_bwd_weights_pd)(handle*, handle, int, const void*, const void*, const void*, const void*,
                                  const dims_t, const dims_t, const dims_t, const dims_t, const void*, const void*);
  status_t (*reorder_pd)(handle*, const void*, handle, const void*, handle, const void*);
  const void* (*pd_query_md)(const void*, int, int);
  status_t (*primitive_create)(handle*, const void*);
  status_t (*primitive_execute)(const void*, handle, int, const exec_arg_t*);
  status_t (*memory_create)(handle*, const void*, handle, void*);
  status_t (*memory_destroy)(handle);
  status_t (*stream_wait)(handle);
  status_t (*stream_destroy)(handle);
};

// ---- thread pool handed to oneDNN (the layout of dnnl::threadpool_interop::threadpool_iface) ----
struct ThreadpoolIface {
  virtual int get_num_threads() const = 0;
  virtual bool get_in_parallel() const = 0;
  virtual void parallel_for(int n, const std::function<void(int, int)>& fn) = 0;
  virtual uint64_t get_flags() const = 0;
  virtual void wait() {}
  virtual ~ThreadpoolIface() = default;
};

thread_local bool t_in_parallel = false;

class Pool final : public ThreadpoolIface {
 public:
  explicit Pool(int n) : n_(n < 1 ? 1 : n) {
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() override {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int get_num_threads() const override { return n_; }
  bool get_in_parallel() const override { return t_in_parallel; }
  uint64_t get_flags() const override { return 0; }  // synchronous: parallel_for returns when all work is done

  void parallel_for(int n, const std::function<void(int, int)>& fn) override {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (n <= 1 || n_ == 1 || t_in_parallel || !busy.owns_lock()) {
      run_inline(n, fn);
      return;
    }
    Region r{&fn, n};
    {
      std::lock_guard<std::mutex> g(m_);
      region_ = &r;
      ++generation_;
    }
    cv_.notify_all();
    work(&r);
    // The region lives on this stack frame: wait until every task ran and every worker that joined has left.
    std::unique_lock<std::mutex> g(m_);
    done_cv_.wait(g, [&] { return r.pending == 0 && r.joined == 0; });
    region_ = nullptr;
  }

 private:
  struct Region {
    const std::function<void(int, int)>* fn;
    int n;
    std::atomic<int> next{0};
    int pending = n;  // guarded by m_
    int joined = 0;   // workers inside work(); guarded by m_
  };

  static void run_inline(int n, const std::function<void(int, int)>& fn) {
    const bool outer = t_in_parallel;
    t_in_parallel = true;
    for (int i = 0; i < n; ++i) fn(i, n);
    t_in_parallel = outer;
  }
  void work(Region* r) {
    t_in_parallel = true;
    int done = 0;
    for (int i; (i = r->next.fetch_add(1)) < r->n; ++done) (*r->fn)(i, r->n);
    t_in_parallel = false;
    std::lock_guard<std::mutex> g(m_);
    r->pending -= done;
    if (r->pending == 0) done_cv_.notify_all();
  }
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      Region* r;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return stop_ || (generation_ != seen && region_ != nullptr); });
        if (stop_) return;
        seen = generation_;
        r = region_;
        ++r->joined;
      }
      work(r);
      std::lock_guard<std::mutex> g(m_);
      --r->joined;
      if (r->joined == 0) done_cv_.notify_all();
    }
  }

  const int n_;
  std::vector<std::thread> workers_;
  std::mutex busy_, m_;
  std::condition_variable cv_, done_cv_;
  Region* region_ = nullptr;  // guarded by m_
  uint64_t generation_ = 0;   // guarded by m_
  bool stop_ = false;
};

// ---- state ----
Api api;
handle engine = nullptr;
Pool* pool = nullptr;
std::mutex cache_mutex;

// Buffers are pooled by size: fresh multi-megabyte allocations cost page faults on every call.
std::mutex buffer_mutex;
std::multimap<size_t, void*> free_buffers;

struct Buffer {
  void* ptr = nullptr;
  size_t size = 0;
  explicit Buffer(size_t n) : size(n) {
    if (!n) return;
    {
      std::lock_guard<std::mutex> g(buffer_mutex);
      auto it = free_buffers.find(n);
      if (it != free_buffers.end()) {
        ptr = it->second;
        free_buffers.erase(it);
        return;
      }
    }
    ptr = std::aligned_alloc(64, (n + 63) / 64 * 64);
  }
  ~Buffer() {
    if (!ptr) return;
    std::lock_guard<std::mutex> g(buffer_mutex);
    free_buffers.emplace(size, ptr);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

struct Memory {
  handle mem = nullptr;
  Memory(const void* md, void* data) { api.memory_create(&mem, md, engine, data); }
  ~Memory() {
    if (mem) api.memory_destroy(mem);
  }
  Memory(const Memory&) = delete;
  Memory& operator=(const Memory&) = delete;
};

// One primitive with its scratchpad descriptor (user-managed scratchpad: one per call, so concurrent calls of
// the same primitive never share one).
struct Prim {
  handle prim = nullptr;
  const void* scratch_md = nullptr;
  size_t scratch = 0;
};

bool make_prim(handle pd, Prim* p) {
  p->scratch_md = api.pd_query_md(pd, kQueryScratchpad, 0);
  p->scratch = api.md_get_size(p->scratch_md);
  return api.primitive_create(&p->prim, pd) == 0;
}

// A reorder between a plain user layout and the layout a primitive chose; prim is null when they are equal.
bool make_reorder(const void* from, const void* to, handle attr, Prim* r) {
  if (api.md_equal(from, to)) return true;
  handle pd = nullptr;
  return api.reorder_pd(&pd, from, engine, to, engine, attr) == 0 && make_prim(pd, r);
}

struct Arg {
  int arg;
  const void* md;
  void* data;
};

// Executes p with `args` (descriptor + pointer each) and a fresh scratchpad; 0 on success.
int run(const Prim& p, std::initializer_list<Arg> args, handle stream) {
  std::vector<std::unique_ptr<Memory>> mems;
  std::vector<exec_arg_t> xs;
  for (const Arg& a : args) {
    mems.emplace_back(new Memory(a.md, a.data));
    xs.push_back({a.arg, mems.back()->mem});
  }
  Buffer scratch(p.scratch);
  if (p.scratch) {
    mems.emplace_back(new Memory(p.scratch_md, scratch.ptr));
    xs.push_back({kArgScratchpad, mems.back()->mem});
  }
  return api.primitive_execute(p.prim, stream, (int)xs.size(), xs.data());
}

// Geometry of one convolution: x (N, C, H, W), w (O, C, KH, KW), y (N, O, OH, OW), stride, padding.
struct Geometry {
  int64_t n, c, h, w, o, kh, kw, oh, ow, sh, sw, pt, pl, pb, pr;
  bool bias;
  auto key() const { return std::make_tuple(n, c, h, w, o, kh, kw, oh, ow, sh, sw, pt, pl, pb, pr, bias); }
};

// Everything for one geometry: the three convolution primitives with the layouts they chose, and the reorders
// between those and the plain NCHW / OIHW tensors MindSpore hands over.
struct Plan {
  handle x_md = nullptr, w_md = nullptr, y_md = nullptr, b_md = nullptr;  // plain user layouts
  const void *fwd_src, *fwd_w, *fwd_dst, *bd_dsrc, *bd_w, *bd_ddst, *bw_src, *bw_dw, *bw_ddst;
  Prim fwd, bwd_data, bwd_weights;
  Prim fwd_src_in, fwd_w_in, fwd_dst_out, bd_ddst_in, bd_w_in, bd_dsrc_out, bw_src_in, bw_ddst_in, bw_dw_out;
};

std::map<decltype(std::declval<Geometry>().key()), Plan*> plans;

handle make_md(std::initializer_list<int64_t> d, int tag) {
  dims_t dims = {};
  int i = 0;
  for (int64_t v : d) dims[i++] = v;
  handle md = nullptr;
  api.md_create_with_tag(&md, i, dims, kF32, tag);
  return md;
}

Plan* build_plan(const Geometry& g) {
  auto* p = new Plan();
  p->x_md = make_md({g.n, g.c, g.h, g.w}, kTagAbcd);
  p->w_md = make_md({g.o, g.c, g.kh, g.kw}, kTagAbcd);
  p->y_md = make_md({g.n, g.o, g.oh, g.ow}, kTagAbcd);
  p->b_md = g.bias ? make_md({g.o}, kTagA) : nullptr;
  // "any": the primitive picks the layouts its fastest kernel wants, as torch's oneDNN calls do.
  handle xa = make_md({g.n, g.c, g.h, g.w}, kTagAny), wa = make_md({g.o, g.c, g.kh, g.kw}, kTagAny),
         ya = make_md({g.n, g.o, g.oh, g.ow}, kTagAny);
  dims_t strides = {g.sh, g.sw}, dil = {0, 0}, pad_l = {g.pt, g.pl}, pad_r = {g.pb, g.pr};
  handle attr = nullptr;
  api.attr_create(&attr);
  api.attr_set_scratchpad_mode(attr, kScratchpadUser);
  handle fpd = nullptr, dpd = nullptr, wpd = nullptr;
  bool ok = api.conv_fwd_pd(&fpd, engine, kForwardTraining, kConvDirect, xa, wa, p->b_md, ya, strides, dil, pad_l,
                            pad_r, attr) == 0 &&
            api.conv_bwd_data_pd(&dpd, engine, kConvDirect, xa, wa, ya, strides, dil, pad_l, pad_r, fpd, attr) == 0 &&
            api.conv_bwd_weights_pd(&wpd, engine, kConvDirect, xa, wa, p->b_md, ya, strides, dil, pad_l, pad_r, fpd,
                                    attr) == 0;
  if (!ok) return nullptr;
  // Queried descriptors belong to their primitive descriptors, which are kept for the life of the process.
  p->fwd_src = api.pd_query_md(fpd, kQuerySrc, 0);
  p->fwd_w = api.pd_query_md(fpd, kQueryWeights, 0);
  p->fwd_dst = api.pd_query_md(fpd, kQueryDst, 0);
  p->bd_dsrc = api.pd_query_md(dpd, kQueryDiffSrc, 0);
  p->bd_w = api.pd_query_md(dpd, kQueryWeights, 0);
  p->bd_ddst = api.pd_query_md(dpd, kQueryDiffDst, 0);
  p->bw_src = api.pd_query_md(wpd, kQuerySrc, 0);
  p->bw_dw = api.pd_query_md(wpd, kQueryDiffWeights, 0);
  p->bw_ddst = api.pd_query_md(wpd, kQueryDiffDst, 0);
  ok = make_prim(fpd, &p->fwd) && make_prim(dpd, &p->bwd_data) && make_prim(wpd, &p->bwd_weights) &&
       make_reorder(p->x_md, p->fwd_src, attr, &p->fwd_src_in) && make_reorder(p->w_md, p->fwd_w, attr, &p->fwd_w_in) &&
       make_reorder(p->fwd_dst, p->y_md, attr, &p->fwd_dst_out) &&
       make_reorder(p->y_md, p->bd_ddst, attr, &p->bd_ddst_in) && make_reorder(p->w_md, p->bd_w, attr, &p->bd_w_in) &&
       make_reorder(p->bd_dsrc, p->x_md, attr, &p->bd_dsrc_out) &&
       make_reorder(p->x_md, p->bw_src, attr, &p->bw_src_in) &&
       make_reorder(p->y_md, p->bw_ddst, attr, &p->bw_ddst_in) && make_reorder(p->bw_dw, p->w_md, attr, &p->bw_dw_out);
  return ok ? p : nullptr;
}

Plan* plan_for(const Geometry& g) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = plans.find(g.key());
  if (it != plans.end()) return it->second;
  Plan* p = build_plan(g);
  if (p) plans.emplace(g.key(), p);
  return p;
}

// One stream per call: oneDNN streams are not meant to be shared by concurrent callers.
struct Stream {
  handle s = nullptr;
  Stream() { api.stream_create(&s, engine, static_cast<ThreadpoolIface*>(pool)); }
  ~Stream() {
    if (s) {
      api.stream_wait(s);
      api.stream_destroy(s);
    }
  }
};

// A tensor in a plain layout, staged into the layout `to` through reorder r when r exists.
struct Staged {
  std::unique_ptr<Buffer> buf;
  void* ptr;
  int status = 0;
  Staged(const Prim& r, const void* from_md, void* from, const void* to, handle stream) : ptr(from) {
    if (!r.prim) return;
    buf.reset(new Buffer(api.md_get_size(to)));
    ptr = buf->ptr;
    status = run(r, {{kArgFrom, from_md, from}, {kArgTo, to, ptr}}, stream);
  }
};

// An output the primitive writes in layout `md`; finish() reorders it into the plain tensor.
struct Output {
  std::unique_ptr<Buffer> buf;
  void* ptr;
  Output(const Prim& r, const void* md, void* plain) : ptr(plain) {
    if (r.prim) {
      buf.reset(new Buffer(api.md_get_size(md)));
      ptr = buf->ptr;
    }
  }
  int finish(const Prim& r, const void* md, const void* plain_md, void* plain, handle stream) {
    return r.prim ? run(r, {{kArgFrom, md, ptr}, {kArgTo, plain_md, plain}}, stream) : 0;
  }
};

// x, w, y: the shapes of input, weight and output; a: int64 [stride_h, stride_w, pad_top, pad_left, pad_bottom,
// pad_right]. False when they do not describe one convolution.
Plan* plan(const int64_t* x, const int64_t* w, const int64_t* y, const int64_t* a, bool bias) {
  const Geometry g = {x[0], x[1], x[2], x[3], w[0], w[2], w[3], y[2], y[3], a[0], a[1], a[2], a[3], a[4], a[5], bias};
  if (!engine || w[1] != x[1] || y[0] != x[0] || y[1] != w[0] || g.sh < 1 || g.sw < 1 ||
      g.oh != (g.h + g.pt + g.pb - g.kh) / g.sh + 1 || g.ow != (g.w + g.pl + g.pr - g.kw) / g.sw + 1)
    return nullptr;
  return plan_for(g);
}

int forward(Plan* p, void* x, void* w, void* b, void* y) {
  if (!p) return 1;
  Stream s;
  Staged xs(p->fwd_src_in, p->x_md, x, p->fwd_src, s.s), ws(p->fwd_w_in, p->w_md, w, p->fwd_w, s.s);
  Output ys(p->fwd_dst_out, p->fwd_dst, y);
  if (xs.status || ws.status) return 2;
  int st = b ? run(p->fwd, {{kArgSrc, p->fwd_src, xs.ptr}, {kArgWeights, p->fwd_w, ws.ptr}, {kArgBias, p->b_md, b},
                            {kArgDst, p->fwd_dst, ys.ptr}}, s.s)
             : run(p->fwd, {{kArgSrc, p->fwd_src, xs.ptr}, {kArgWeights, p->fwd_w, ws.ptr},
                            {kArgDst, p->fwd_dst, ys.ptr}}, s.s);
  return st ? 3 : ys.finish(p->fwd_dst_out, p->fwd_dst, p->y_md, y, s.s) ? 4 : 0;
}

int backward_data(Plan* p, void* dy, void* w, void* dx) {
  if (!p) return 1;
  Stream s;
  Staged dys(p->bd_ddst_in, p->y_md, dy, p->bd_ddst, s.s), ws(p->bd_w_in, p->w_md, w, p->bd_w, s.s);
  Output dxs(p->bd_dsrc_out, p->bd_dsrc, dx);
  if (dys.status || ws.status) return 2;
  int st = run(p->bwd_data, {{kArgDiffDst, p->bd_ddst, dys.ptr}, {kArgWeights, p->bd_w, ws.ptr},
                             {kArgDiffSrc, p->bd_dsrc, dxs.ptr}}, s.s);
  return st ? 3 : dxs.finish(p->bd_dsrc_out, p->bd_dsrc, p->x_md, dx, s.s) ? 4 : 0;
}

int backward_weights(Plan* p, void* x, void* dy, void* dw, void* db) {
  if (!p) return 1;
  Stream s;
  Staged xs(p->bw_src_in, p->x_md, x, p->bw_src, s.s), dys(p->bw_ddst_in, p->y_md, dy, p->bw_ddst, s.s);
  Output dws(p->bw_dw_out, p->bw_dw, dw);
  if (xs.status || dys.status) return 2;
  int st = db ? run(p->bwd_weights, {{kArgSrc, p->bw_src, xs.ptr}, {kArgDiffDst, p->bw_ddst, dys.ptr},
                                     {kArgDiffWeights, p->bw_dw, dws.ptr}, {kArgDiffBias, p->b_md, db}}, s.s)
              : run(p->bwd_weights, {{kArgSrc, p->bw_src, xs.ptr}, {kArgDiffDst, p->bw_ddst, dys.ptr},
                                     {kArgDiffWeights, p->bw_dw, dws.ptr}}, s.s);
  return st ? 3 : dws.finish(p->bw_dw_out, p->bw_dw, p->w_md, dw, s.s) ? 4 : 0;
}

}  // namespace

// Loads the oneDNN library at `path` (a private copy of MindSpore's) and starts the thread pool; 0 on success.
extern "C" int SinganConvInit(const char* path, int threads) {
  if (engine) return 0;
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) return 1;
  auto sym = [&](const char* name) { return dlsym(lib, name); };
#define LOAD(field, name) *reinterpret_cast<void**>(&api.field) = sym(name); if (!api.field) return 2
  LOAD(engine_create, "dnnl_engine_create");
  LOAD(stream_create, "dnnl_threadpool_interop_stream_create");
  LOAD(set_max_concurrency, "dnnl_threadpool_interop_set_max_concurrency");
  LOAD(md_create_with_tag, "dnnl_memory_desc_create_with_tag");
  LOAD(md_equal, "dnnl_memory_desc_equal");
  LOAD(md_get_size, "dnnl_memory_desc_get_size");
  LOAD(attr_create, "dnnl_primitive_attr_create");
  LOAD(attr_set_scratchpad_mode, "dnnl_primitive_attr_set_scratchpad_mode");
  LOAD(conv_fwd_pd, "dnnl_convolution_forward_primitive_desc_create");
  LOAD(conv_bwd_data_pd, "dnnl_convolution_backward_data_primitive_desc_create");
  LOAD(conv_bwd_weights_pd, "dnnl_convolution_backward_weights_primitive_desc_create");
  LOAD(reorder_pd, "dnnl_reorder_primitive_desc_create");
  LOAD(pd_query_md, "dnnl_primitive_desc_query_md");
  LOAD(primitive_create, "dnnl_primitive_create");
  LOAD(primitive_execute, "dnnl_primitive_execute");
  LOAD(memory_create, "dnnl_memory_create");
  LOAD(memory_destroy, "dnnl_memory_destroy");
  LOAD(stream_wait, "dnnl_stream_wait");
  LOAD(stream_destroy, "dnnl_stream_destroy");
#undef LOAD
  if (threads < 1) threads = (int)std::thread::hardware_concurrency();
  if (threads < 1) threads = 1;
  api.set_max_concurrency(threads);
  pool = new Pool(threads);
  handle e = nullptr;
  if (api.engine_create(&e, kEngineCpu, 0) != 0) return 3;
  engine = e;
  return 0;
}

// ---- MindSpore AOT entry points. params: inputs, then outputs; the last input is the int64 attrs tensor. ----

// ConvFwd(x, w, attrs) -> y
extern "C" int ConvFwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  singan_timing::Scope timed(singan_timing::kConvFwd);
  if (nparam != 4 || !all_float32(2, dtypes)) return 10;
  return forward(plan(shapes[0], shapes[1], shapes[3], static_cast<int64_t*>(params[2]), false), params[0],
                 params[1], nullptr, params[3]);
}

// ConvFwdBias(x, w, b, attrs) -> y
extern "C" int ConvFwdBias(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                           void*) {
  singan_timing::Scope timed(singan_timing::kConvFwdBias);
  if (nparam != 5 || !all_float32(3, dtypes)) return 10;
  return forward(plan(shapes[0], shapes[1], shapes[4], static_cast<int64_t*>(params[3]), true), params[0],
                 params[1], params[2], params[4]);
}

// ConvBwdData(dy, w, x, attrs) -> dx; x only gives the shape.
extern "C" int ConvBwdData(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                           void*) {
  singan_timing::Scope timed(singan_timing::kConvBwdData);
  if (nparam != 5 || !all_float32(3, dtypes)) return 10;
  return backward_data(plan(shapes[4], shapes[1], shapes[0], static_cast<int64_t*>(params[3]), false), params[0],
                       params[1], params[4]);
}

// ConvTransposeFwd(x, w, attrs) -> y: a transposed convolution is the data gradient of the convolution whose
// weight has the same (in, out, kh, kw) layout; attrs are that convolution's.
extern "C" int ConvTransposeFwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                                void*) {
  singan_timing::Scope timed(singan_timing::kConvTransposeFwd);
  if (nparam != 4 || !all_float32(2, dtypes)) return 10;
  return backward_data(plan(shapes[3], shapes[1], shapes[0], static_cast<int64_t*>(params[2]), false), params[0],
                       params[1], params[3]);
}

// ConvBwdWeights(x, dy, w, attrs) -> dw; w only gives the shape.
extern "C" int ConvBwdWeights(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                              void*) {
  singan_timing::Scope timed(singan_timing::kConvBwdWeights);
  if (nparam != 5 || !all_float32(3, dtypes)) return 10;
  return backward_weights(plan(shapes[0], shapes[4], shapes[1], static_cast<int64_t*>(params[3]), false),
                          params[0], params[1], params[4], nullptr);
}

// ConvBwdWeightsBias(x, dy, w, attrs) -> (dw, db)
extern "C" int ConvBwdWeightsBias(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                  void*, void*) {
  singan_timing::Scope timed(singan_timing::kConvBwdWeightsBias);
  if (nparam != 6 || !all_float32(3, dtypes)) return 10;
  return backward_weights(plan(shapes[0], shapes[4], shapes[1], static_cast<int64_t*>(params[3]), true),
                          params[0], params[1], params[4], params[5]);
}
