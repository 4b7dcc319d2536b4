// Kernel signatures (kernels/kernel_api.h): the declaration parser, the size-expression evaluator and
// the span evaluation every launch, host twin and fault is derived from.
#include <cctype>
#include <cmath>
#include <cstring>
#include <sstream>

#include "../../kernels/kernel_api.h"

namespace ds4 {

std::deque<KernelSig> &kernel_registry() {
  static std::deque<KernelSig> table;
  return table;
}

KernelSig &register_kernel(const char *name, KernelFn fn) {
  KernelSig &s = kernel_registry().emplace_back();
  s.name = name;
  s.fn = fn;
  return s;
}

static std::string trim(const std::string &s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace((unsigned char)s[a])) a++;
  while (b > a && std::isspace((unsigned char)s[b - 1])) b--;
  return s.substr(a, b - a);
}

static std::vector<std::string> split(const std::string &s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char ch : s) {
    if (ch == '(' || ch == '[') depth++;
    if (ch == ')' || ch == ']') depth--;
    if (ch == sep && depth == 0) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!trim(cur).empty() || !out.empty()) out.push_back(trim(cur));
  return out;
}

// ---------------------------------------------------------------- expressions

// Precedence: '=' (==) lowest, then + -, then * / %.
static int prec(char op) { return op == '=' ? 1 : (op == '+' || op == '-') ? 2 : 3; }

Expr::Expr(const std::string &text, const std::vector<std::string> &scalars) : text_(trim(text)) {
  std::vector<char> ops;
  bool expect_operand = true;
  for (size_t i = 0; i < text_.size();) {
    const char ch = text_[i];
    if (std::isspace((unsigned char)ch)) { i++; continue; }
    if (std::isdigit((unsigned char)ch)) {
      if (!expect_operand) throw std::invalid_argument("'" + text_ + "': operand where an operator belongs");
      int64_t v = 0;
      while (i < text_.size() && std::isdigit((unsigned char)text_[i])) v = v * 10 + (text_[i++] - '0');
      rpn_.push_back({0, v, -1});
      expect_operand = false;
    } else if (std::isalpha((unsigned char)ch) || ch == '_') {
      if (!expect_operand) throw std::invalid_argument("'" + text_ + "': operand where an operator belongs");
      size_t j = i;
      while (j < text_.size() && (std::isalnum((unsigned char)text_[j]) || text_[j] == '_')) j++;
      const std::string id = text_.substr(i, j - i);
      int k = -1;
      for (size_t s = 0; s < scalars.size(); s++)
        if (scalars[s] == id) k = (int)s;
      if (k < 0) throw std::invalid_argument("'" + text_ + "': no scalar named " + id);
      rpn_.push_back({0, 0, k});
      i = j;
      expect_operand = false;
    } else if (ch == '(') {
      ops.push_back('(');
      i++;
    } else if (ch == ')') {
      while (!ops.empty() && ops.back() != '(') { rpn_.push_back({ops.back(), 0, -1}); ops.pop_back(); }
      if (ops.empty()) throw std::invalid_argument("'" + text_ + "': unbalanced ')'");
      ops.pop_back();
      i++;
    } else if (std::strchr("+-*/%", ch) || (ch == '=' && i + 1 < text_.size() && text_[i + 1] == '=')) {
      if (expect_operand) throw std::invalid_argument("'" + text_ + "': operator where an operand belongs");
      while (!ops.empty() && ops.back() != '(' && prec(ops.back()) >= prec(ch)) { rpn_.push_back({ops.back(), 0, -1}); ops.pop_back(); }
      ops.push_back(ch);
      i += ch == '=' ? 2 : 1;
      expect_operand = true;
    } else {
      throw std::invalid_argument("'" + text_ + "': unexpected '" + std::string(1, ch) + "'");
    }
  }
  if (expect_operand && !text_.empty()) throw std::invalid_argument("'" + text_ + "': ends in an operator");
  while (!ops.empty()) {
    if (ops.back() == '(') throw std::invalid_argument("'" + text_ + "': unbalanced '('");
    rpn_.push_back({ops.back(), 0, -1});
    ops.pop_back();
  }
}

int64_t Expr::eval(const std::vector<double> &scalars) const {
  int64_t stack[32];
  int sp = 0;
  for (const Tok &t : rpn_) {
    if (t.op == 0) {
      if (sp == 32) throw std::invalid_argument("'" + text_ + "' is too deep");
      stack[sp++] = t.scalar >= 0 ? (int64_t)std::llround(scalars.at(t.scalar)) : t.value;
      continue;
    }
    const int64_t b = stack[--sp], a = stack[--sp];
    int64_t r = 0;
    switch (t.op) {
      case '+': r = a + b; break;
      case '-': r = a - b; break;
      case '*': r = a * b; break;
      case '/': if (b == 0) throw std::invalid_argument("'" + text_ + "' divides by 0"); r = a / b; break;
      case '%': if (b == 0) throw std::invalid_argument("'" + text_ + "' divides by 0"); r = a % b; break;
      default: r = a == b; break;
    }
    stack[sp++] = r;
  }
  return sp ? stack[0] : 0;
}

// ---------------------------------------------------------------- declarations

const DTypeInfo &dtype_info(DType t) {
  static const DTypeInfo info[] = {{"f32", 4, 1},      {"f16", 2, 1},      {"i8", 1, 1},          {"i32", 4, 1},
                                   {"u8", 1, 1},       {"q8_0", 34, 32},   {"q2_k", 84, 256},     {"iq2_xxs", 66, 256}};
  return info[(int)t];
}

const char *role_name(Role r) {
  static const char *names[] = {"in", "weight", "out", "inout"};
  return names[(int)r];
}

KernelSig &KernelSig::describe(const char *text) {
  doc = text;
  return *this;
}

// Runs one builder step, keeping the first error instead of throwing from a static initializer.
template <class F>
static KernelSig &declare(KernelSig &k, F &&step) {
  try {
    step();
  } catch (const std::exception &e) {
    if (k.error.empty()) k.error = e.what();
  }
  return k;
}

KernelSig &KernelSig::takes(const char *names) {
  return declare(*this, [&] {
    scalars_text = names;
    scalars.clear();
    for (const std::string &n : split(names, ',')) {
      if (n.empty()) throw std::invalid_argument(name + ": empty scalar name");
      if (scalar_index(n.c_str()) >= 0) throw std::invalid_argument(name + ": scalar " + n + " declared twice");
      scalars.push_back(n);
    }
  });
}

// "ROLE NAME DTYPE[COUNT] [@ OFFSET] [ring(LEN)] [mat(N, OFF, STRIDE)] [q8_0|q8_k] [experts]"
static BufSig parse_buffer(const std::string &kernel, const std::string &decl, const std::vector<std::string> &scalars) {
  BufSig b;
  const auto bad = [&](const std::string &why) { return std::invalid_argument(kernel + ": buffer '" + decl + "': " + why); };
  std::istringstream in(decl);
  std::string role, head;
  in >> role >> b.name;
  if (role == "in") b.role = Role::In;
  else if (role == "weight") b.role = Role::Weight;
  else if (role == "out") b.role = Role::Out;
  else if (role == "inout") b.role = Role::InOut;
  else throw bad("role must be in, weight, out or inout");
  std::string rest;
  std::getline(in, rest);
  rest = trim(rest);
  const size_t lb = rest.find('['), rb = rest.find(']');
  if (lb == std::string::npos || rb == std::string::npos || rb < lb) throw bad("expected DTYPE[COUNT]");
  const std::string dt = trim(rest.substr(0, lb));
  bool found = false;
  for (int t = 0; t <= (int)DType::IQ2_XXS; t++)
    if (dt == dtype_info((DType)t).name) { b.dtype = (DType)t; found = true; }
  if (!found) throw bad("unknown dtype " + dt);
  try {
    b.count = Expr(rest.substr(lb + 1, rb - lb - 1), scalars);
    std::string tail = trim(rest.substr(rb + 1));
    while (!tail.empty()) {
      if (tail[0] == '@') {
        // the offset runs to the next attribute keyword that follows a space, if any
        size_t end = std::string::npos;
        for (size_t p = 1; p < tail.size() && end == std::string::npos; p++) {
          if (!std::isspace((unsigned char)tail[p - 1])) continue;
          for (const char *kw : {"ring(", "mat(", "q8_0", "q8_k", "experts"})
            if (tail.compare(p, std::strlen(kw), kw) == 0) end = p;
        }
        b.offset = Expr(tail.substr(1, end == std::string::npos ? std::string::npos : end - 1), scalars);
        tail = end == std::string::npos ? "" : trim(tail.substr(end));
      } else if (tail.compare(0, 5, "ring(") == 0 || tail.compare(0, 4, "mat(") == 0) {
        const size_t close = tail.find(')');
        if (close == std::string::npos) throw bad("unbalanced attribute");
        const bool ring = tail[0] == 'r';
        const std::string args = tail.substr(ring ? 5 : 4, close - (ring ? 5 : 4));
        if (ring) {
          b.ring = Expr(args, scalars);
        } else {
          const std::vector<std::string> a = split(args, ',');
          if (a.size() != 3) throw bad("mat(N, OFF, STRIDE) takes three expressions");
          b.mat_n = Expr(a[0], scalars);
          b.mat_off = Expr(a[1], scalars);
          b.mat_stride = Expr(a[2], scalars);
        }
        tail = trim(tail.substr(close + 1));
      } else if (tail.compare(0, 4, "q8_0") == 0 || tail.compare(0, 4, "q8_k") == 0) {
        b.quant = tail.substr(0, 4);
        tail = trim(tail.substr(4));
      } else if (tail.compare(0, 7, "experts") == 0) {
        b.experts = true;
        tail = trim(tail.substr(7));
      } else {
        throw bad("unknown attribute '" + tail + "'");
      }
    }
  } catch (const std::invalid_argument &e) {
    if (std::string(e.what()).rfind(kernel + ":", 0) == 0) throw;
    throw bad(e.what());
  }
  if (!b.quant.empty() && (b.dtype != DType::F32 || (b.role != Role::In && b.role != Role::InOut)))
    throw bad("only an f32 input can be quantized by the kernel");
  return b;
}

KernelSig &KernelSig::buffers(const char *decl) {
  return declare(*this, [&] {
    bufs_text = decl;
    bufs.clear();
    for (const std::string &d : split(decl, ';')) {
      BufSig b = parse_buffer(name, d, scalars);
      if (buf_index(b.name.c_str()) >= 0) throw std::invalid_argument(name + ": buffer " + b.name + " declared twice");
      bufs.push_back(std::move(b));
    }
  });
}

KernelSig &KernelSig::produces(const char *names) {
  stages.clear();
  for (const std::string &s : split(names, ',')) if (!s.empty()) stages.push_back(s);
  return *this;
}

KernelSig &KernelSig::uses(const char *names) {
  return declare(*this, [&] {
    static const char *known[] = {"exp", "rsqrt", "sqrt", "log", "round", "f16", "rope"};
    approx.clear();
    std::istringstream in(names);
    std::string a;
    while (in >> a) {
      bool ok = false;
      for (const char *k : known) ok = ok || a == k;
      if (!ok) throw std::invalid_argument(name + ": unknown approx '" + a + "'");
      approx.push_back(a);
    }
  });
}

KernelSig &KernelSig::max_nmse(double a, double e) {
  return declare(*this, [&] {
    if (!(a >= 0 && e >= 0)) throw std::invalid_argument(name + ": budgets must be ≥ 0");
    budget.ascend = a;
    budget.exact = e;
  });
}

KernelSig &KernelSig::grows_per_pos(double rel) {
  return declare(*this, [&] {
    if (!(rel >= 0)) throw std::invalid_argument(name + ": a budget's growth per position must be ≥ 0");
    budget.per_pos = rel;
  });
}

int KernelSig::scalar_index(const char *n) const {
  for (size_t k = 0; k < scalars.size(); k++)
    if (scalars[k] == n) return (int)k;
  return -1;
}

int KernelSig::buf_index(const char *n) const {
  for (size_t k = 0; k < bufs.size(); k++)
    if (bufs[k].name == n) return (int)k;
  return -1;
}

// ---------------------------------------------------------------- spans

bool Span::contains(size_t a, size_t n) const {
  if (n == 0) return true;
  if (ring == 0) return a >= off && a + n <= off + len;
  // a ring span: [off, off+len) taken modulo ring bytes, so it may wrap once
  if (a + n > ring) return false;
  if (off + len <= ring) return a >= off && a + n <= off + len;
  return (a >= off && a + n <= ring) || a + n <= off + len - ring;
}

std::vector<Span> evaluate_spans(const KernelSig &sig, const std::vector<double> &scalars) {
  std::vector<Span> out;
  for (const BufSig &b : sig.bufs) {
    const DTypeInfo &t = dtype_info(b.dtype);
    const auto bytes_of = [&](const Expr &e, const char *what) -> size_t {
      const int64_t v = e.empty() ? 0 : e.eval(scalars);
      if (v < 0) throw std::invalid_argument(sig.name + ": buffer " + b.name + ": " + what + " " + e.text() + " = " + std::to_string(v) + " is negative");
      if (v % (int64_t)t.block_elems != 0)
        throw std::invalid_argument(sig.name + ": buffer " + b.name + ": " + what + " " + e.text() + " = " + std::to_string(v) +
                                    " is not a whole number of " + t.name + " blocks (" + std::to_string(t.block_elems) + ")");
      return (size_t)(v / (int64_t)t.block_elems) * t.block_bytes;
    };
    Span s;
    s.len = bytes_of(b.count, "count");
    s.off = bytes_of(b.offset, "offset");
    s.ring = bytes_of(b.ring, "ring");
    if (s.ring) s.off %= s.ring;
    if (s.ring && s.len > s.ring) throw std::invalid_argument(sig.name + ": buffer " + b.name + ": count exceeds its ring");
    out.push_back(s);
  }
  return out;
}

}  // namespace ds4
