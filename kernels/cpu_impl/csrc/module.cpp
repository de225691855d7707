// Python binding of the CPU nearest-code kernels: kernels.cpu_impl._nearest_code.
//
//   instruction_sets() -> tuple of the kernels this CPU can run, fastest first ("avx512", "avx2")
//   search(isa, x, n, codes, k, d, cosine, index, distance, threads) -> None
//
// Tensors are passed as addresses (tensor.data_ptr()) of C-contiguous fp32 / int64 CPU memory that
// the caller keeps alive; the GIL is released while the kernel runs.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstring>
#include <exception>
#include <string>

#include "nearest_code_common.h"

static PyObject* instruction_sets(PyObject*, PyObject*) {
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
        return Py_BuildValue("(ss)", "avx512", "avx2");
    if (avx2) return Py_BuildValue("(s)", "avx2");
#endif
    return PyTuple_New(0);
}

static PyObject* search(PyObject*, PyObject* args) {
    const char* isa;
    unsigned long long x, codes, index, distance;
    long long n, k, d;
    int cosine, threads;
    if (!PyArg_ParseTuple(args, "sKLKLLpKKi", &isa, &x, &n, &codes, &k, &d, &cosine, &index, &distance, &threads))
        return nullptr;
    if (n < 0 || k < 1 || d < 1 || threads < 1) {
        PyErr_Format(PyExc_ValueError, "search: need n >= 0, k >= 1, d >= 1, threads >= 1 (got %lld, %lld, %lld, %d)",
                     n, k, d, threads);
        return nullptr;
    }
    int status = SEARCH_OK;
#if defined(__x86_64__) || defined(_M_X64)
    auto kernel = std::strcmp(isa, "avx512") == 0 ? nearest_code_avx512
                  : std::strcmp(isa, "avx2") == 0 ? nearest_code_avx2
                                                   : nullptr;
#else
    decltype(&nearest_code_avx2) kernel = nullptr;
#endif
    if (kernel == nullptr) {
        PyErr_Format(PyExc_ValueError, "search: no kernel for instruction set '%s' in this build", isa);
        return nullptr;
    }
    std::string failure;  // an exception must not cross into Python's C code (e.g. no thread could start)
    Py_BEGIN_ALLOW_THREADS
    try {
        status = kernel(reinterpret_cast<const float*>(x), n, reinterpret_cast<const float*>(codes), k, d, cosine != 0,
                        reinterpret_cast<int64_t*>(index), reinterpret_cast<float*>(distance), threads);
    } catch (const std::exception& error) {
        failure = error.what();
    }
    Py_END_ALLOW_THREADS
    if (!failure.empty()) {
        PyErr_Format(PyExc_RuntimeError, "nearest-code search failed: %s", failure.c_str());
        return nullptr;
    }
    if (status == SEARCH_OUT_OF_MEMORY) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"instruction_sets", instruction_sets, METH_NOARGS, "The kernels this CPU can run, fastest first."},
    {"search", search, METH_VARARGS, "Nearest code of each row (see module.cpp)."},
    {nullptr, nullptr, 0, nullptr},
};

static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_nearest_code", "CPU nearest-code kernels.", -1, methods};

PyMODINIT_FUNC PyInit__nearest_code() { return PyModule_Create(&module_def); }
