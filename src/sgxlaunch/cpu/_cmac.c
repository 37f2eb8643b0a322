/*
 * sgxlaunch.cpu._cmac — an optional native AES-128-CMAC (AES-NI), for the emulated processor's
 * key derivation and the launch enclave's token MAC (sgxlaunch.cpu.keys.cmac128).
 *
 * The processor derives every key with AES-128-CMAC (SDM: derivekey); the launch enclave MACs
 * every EINITTOKEN under a key EGETKEY derived for that token's KEYID, so each token costs one
 * CMAC under a key never used before. Through the `cryptography` package most of that cost is
 * setting up a cipher context for the new key; here it is the ten AES-NI round-key steps.
 *
 * Algorithms, from their specifications (not from any implementation):
 *   AES-128: FIPS 197 (key expansion with Rcon 01 02 04 08 10 20 40 80 1b 36; ten rounds), with
 *            the AES-NI instructions as Intel's "Advanced Encryption Standard (AES) New
 *            Instructions Set" white paper describes them (AESKEYGENASSIST, AESENC, AESENCLAST).
 *   CMAC:    NIST SP 800-38B / RFC 4493: L = AES(K, 0^128); K1 = dbl(L); K2 = dbl(K1), dbl a
 *            left shift by one bit with 0x87 folded into the last byte when the top bit was set;
 *            a complete last block is XORed with K1, an incomplete (or empty) one padded with
 *            0x80 0x00… and XORed with K2; the tag is the last CBC-MAC block.
 *
 * The module imports only when the processor has AES-NI (CPUID.1:ECX.AESNI[bit 25]) and the
 * compiler targets x86-64; sgxlaunch.cpu.keys checks it against `cryptography` on the RFC 4493
 * examples before using it and falls back to `cryptography` otherwise.
 * tests/cpu/test_cmac_native.py compares the two on random keys and lengths.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if !defined(__x86_64__) || !(defined(__GNUC__) || defined(__clang__))
#error "sgxlaunch.cpu._cmac needs x86-64 and GCC or Clang (the build skips it otherwise)"
#endif

#include <cpuid.h>
#include <wmmintrin.h>
#include <emmintrin.h>

#define AESNI __attribute__((target("aes,sse2")))

AESNI static inline __m128i expand_step(__m128i key, __m128i assist) {
    /* FIPS 197 §5.2 for Nk = 4: w[i] = w[i-4] ^ w[i-1], with SubWord(RotWord(w[i-1])) ^ Rcon
     * (AESKEYGENASSIST's dword 3) folded into the first word of each round key. */
    assist = _mm_shuffle_epi32(assist, 0xff);
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, assist);
}

#define STEP(i, rcon) rk[i] = expand_step(rk[(i) - 1], _mm_aeskeygenassist_si128(rk[(i) - 1], rcon))

AESNI static void expand_key(const unsigned char *key, __m128i rk[11]) {
    rk[0] = _mm_loadu_si128((const __m128i *)key);
    STEP(1, 0x01);
    STEP(2, 0x02);
    STEP(3, 0x04);
    STEP(4, 0x08);
    STEP(5, 0x10);
    STEP(6, 0x20);
    STEP(7, 0x40);
    STEP(8, 0x80);
    STEP(9, 0x1b);
    STEP(10, 0x36);
}

AESNI static inline __m128i encrypt_block(const __m128i rk[11], __m128i block) {
    block = _mm_xor_si128(block, rk[0]);
    for (int r = 1; r < 10; r++) block = _mm_aesenc_si128(block, rk[r]);
    return _mm_aesenclast_si128(block, rk[10]);
}

static void dbl(const unsigned char in[16], unsigned char out[16]) {
    unsigned char carry = 0;
    for (int k = 15; k >= 0; k--) {
        out[k] = (unsigned char)((in[k] << 1) | carry);
        carry = (unsigned char)(in[k] >> 7);
    }
    if (in[0] & 0x80) out[15] ^= 0x87;
}

AESNI static void cmac(const unsigned char *key, const unsigned char *msg, size_t len,
                       unsigned char tag[16]) {
    __m128i rk[11];
    unsigned char l[16], k1[16], k2[16], last[16];
    expand_key(key, rk);
    _mm_storeu_si128((__m128i *)l, encrypt_block(rk, _mm_setzero_si128()));
    dbl(l, k1);
    dbl(k1, k2);
    size_t blocks = len ? (len + 15) / 16 : 1;
    size_t tail = len - 16 * (blocks - 1); /* bytes in the last block: 0..16 */
    const unsigned char *lastmsg = msg + 16 * (blocks - 1);
    if (tail == 16) {
        for (int k = 0; k < 16; k++) last[k] = lastmsg[k] ^ k1[k];
    } else {
        for (size_t k = 0; k < 16; k++) {
            unsigned char m = k < tail ? lastmsg[k] : (k == tail ? 0x80 : 0x00);
            last[k] = m ^ k2[k];
        }
    }
    __m128i x = _mm_setzero_si128();
    for (size_t b = 0; b + 1 < blocks; b++)
        x = encrypt_block(rk, _mm_xor_si128(x, _mm_loadu_si128((const __m128i *)(msg + 16 * b))));
    x = encrypt_block(rk, _mm_xor_si128(x, _mm_loadu_si128((const __m128i *)last)));
    _mm_storeu_si128((__m128i *)tag, x);
}

static PyObject *py_cmac128(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cmac128(key, data) takes 2 arguments");
        return NULL;
    }
    unsigned char tag[16];
    PyObject *key = args[0], *data = args[1];
    if (PyBytes_CheckExact(key) && PyBytes_CheckExact(data)) {
        if (PyBytes_GET_SIZE(key) != 16) {
            PyErr_SetString(PyExc_ValueError, "an AES-128 key is 16 bytes");
            return NULL;
        }
        cmac((const unsigned char *)PyBytes_AS_STRING(key),
             (const unsigned char *)PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data), tag);
        return PyBytes_FromStringAndSize((const char *)tag, 16);
    }
    Py_buffer kb, db;
    if (PyObject_GetBuffer(key, &kb, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(data, &db, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&kb);
        return NULL;
    }
    PyObject *result = NULL;
    if (kb.len != 16) {
        PyErr_SetString(PyExc_ValueError, "an AES-128 key is 16 bytes");
    } else {
        cmac((const unsigned char *)kb.buf, (const unsigned char *)db.buf, (size_t)db.len, tag);
        result = PyBytes_FromStringAndSize((const char *)tag, 16);
    }
    PyBuffer_Release(&db);
    PyBuffer_Release(&kb);
    return result;
}

static PyMethodDef methods[] = {
    {"cmac128", (PyCFunction)(void (*)(void))py_cmac128, METH_FASTCALL,
     "cmac128(key, data) -> bytes: AES-128-CMAC (16 bytes) of data under a 16-byte key."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sgxlaunch.cpu._cmac",
    "Optional native AES-128-CMAC with AES-NI (see sgxlaunch.cpu.keys).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cmac(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_AES)) {
        PyErr_SetString(PyExc_ImportError, "sgxlaunch.cpu._cmac: this processor has no AES-NI");
        return NULL;
    }
    return PyModule_Create(&module);
}
