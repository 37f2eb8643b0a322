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
 * einittoken_key: EGETKEY's plain success case for KEYNAME = EINITTOKEN_KEY (the launch
 * enclave's key for each token), see below.
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

/* -- EGETKEY for EINITTOKEN_KEY: the success case only --------------------------------------
 *
 * The Python leaf (sgxlaunch.cpu.enclave.Enclu.egetkey) is the specification. This function
 * confirms that a call is the plain success case of KEYNAME = EINITTOKEN_KEY and then computes
 * exactly the key the leaf computes: the 644-byte dependencies of
 * sgxlaunch.cpu.keys.EINITTOKEN_DEPENDENCIES and their CMAC under the root key. Anything else —
 * a KEYREQUEST of another type or length, a reserved byte or KEYPOLICY bit set, a KSS policy
 * without KSS, another KEYNAME, the enclave without EINITTOKEN_KEY, a KEYREQUEST.CPUSVN other
 * than the CPU's, KEYREQUEST.ISVSVN above the SECS's, a value out of its field's range — returns
 * None and the Python leaf runs from the start, so every refusal has one implementation.
 *
 * KEYREQUEST (512 bytes; SDM 38.7.1): KEYNAME u16 @0, KEYPOLICY u16 @2, ISVSVN u16 @4,
 * reserved @6..7, CPUSVN @8..23, ATTRIBUTEMASK (FLAGS u64 @24, XFRM u64 @32), KEYID @40..71,
 * MISCMASK u32 @72, CONFIGSVN u16 @76, reserved @78..511.
 * Dependencies (sgxlaunch.cpu.keys, 644 bytes): KEYNAME @0, ISVPRODID @34, ISVSVN @36,
 * SGXOWNEREPOCH @38, ATTRIBUTES.FLAGS @54, ATTRIBUTES.XFRM @62, MRSIGNER @118, KEYID @150,
 * SEAL_KEY_FUSES @182, CPUSVN @198, MISCSELECT @214, PADDING @222..573; every other byte 0. */

#define KEYNAME_EINITTOKEN 0u      /* SDM: KEYREQUEST.KEYNAME values */
#define KEYPOLICY_RESERVED 0xFFC0u /* bits 15:6 */
#define KEYPOLICY_KSS 0x003Cu      /* NOISVPRODID, CONFIGID, ISVFAMILYID, ISVEXTPRODID */
#define ATTR_EINITTOKEN_KEY 0x20u  /* ATTRIBUTES.EINITTOKEN_KEY, bit 5 */
#define ATTR_KSS 0x80u             /* ATTRIBUTES.KSS, bit 7 */
#define REQUIRED_SEALING 0x3u      /* INIT | DEBUG */

static inline uint64_t le_load(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

static inline void le_store(unsigned char *p, uint64_t v, int bytes) {
    for (int k = 0; k < bytes; k++) {
        p[k] = (unsigned char)(v & 0xFF);
        v >>= 8;
    }
}

/* A Python int in [0, limit] as uint64_t; -1 (no exception left) when it is not one. */
static int as_u64(PyObject *obj, uint64_t limit, uint64_t *out) {
    if (!PyLong_CheckExact(obj)) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    if (v > limit) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Exact bytes of `size` bytes, or NULL. */
static inline const unsigned char *fixed(PyObject *obj, Py_ssize_t size) {
    if (!PyBytes_CheckExact(obj) || PyBytes_GET_SIZE(obj) != size) return NULL;
    return (const unsigned char *)PyBytes_AS_STRING(obj);
}

/* einittoken_key(keyrequest, root_key, seal_fuses, owner_epoch, cpu_cpusvn, attributes, xfrm,
 *                isvprodid, isvsvn, mrsigner, miscselect, padding) -> bytes | None */
static PyObject *py_einittoken_key(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "einittoken_key takes 12 arguments");
        return NULL;
    }
    const unsigned char *req = fixed(args[0], 512), *root = fixed(args[1], 16),
                        *fuses = fixed(args[2], 16), *epoch = fixed(args[3], 16),
                        *cpusvn = fixed(args[4], 16), *mrsigner = fixed(args[9], 32),
                        *padding = fixed(args[11], 352);
    uint64_t attributes, xfrm, isvprodid, secs_isvsvn, miscselect;
    if (!req || !root || !fuses || !epoch || !cpusvn || !mrsigner || !padding ||
        as_u64(args[5], UINT64_MAX, &attributes) || as_u64(args[6], UINT64_MAX, &xfrm) ||
        as_u64(args[7], 0xFFFF, &isvprodid) || as_u64(args[8], 0xFFFF, &secs_isvsvn) ||
        as_u64(args[10], 0xFFFFFFFFu, &miscselect))
        Py_RETURN_NONE;
    uint64_t name = le_load(req, 2), policy = le_load(req + 2, 2), isvsvn = le_load(req + 4, 2);
    uint64_t configsvn = le_load(req + 76, 2);
    if (req[6] || req[7]) Py_RETURN_NONE;
    for (int k = 78; k < 512; k++)
        if (req[k]) Py_RETURN_NONE;
    if (policy & KEYPOLICY_RESERVED) Py_RETURN_NONE;
    if (!(attributes & ATTR_KSS) && ((policy & KEYPOLICY_KSS) || configsvn)) Py_RETURN_NONE;
    if (name != KEYNAME_EINITTOKEN || !(attributes & ATTR_EINITTOKEN_KEY)) Py_RETURN_NONE;
    if (memcmp(req + 8, cpusvn, 16) != 0 || isvsvn > secs_isvsvn) Py_RETURN_NONE;
    unsigned char deps[644], key[16];
    memset(deps, 0, sizeof deps);
    le_store(deps + 0, KEYNAME_EINITTOKEN, 2);
    le_store(deps + 34, isvprodid, 2);
    le_store(deps + 36, isvsvn, 2);
    memcpy(deps + 38, epoch, 16);
    le_store(deps + 54, (le_load(req + 24, 8) | REQUIRED_SEALING) & attributes, 8);
    le_store(deps + 62, le_load(req + 32, 8) & xfrm, 8);
    memcpy(deps + 118, mrsigner, 32);
    memcpy(deps + 150, req + 40, 32);
    memcpy(deps + 182, fuses, 16);
    memcpy(deps + 198, req + 8, 16);
    le_store(deps + 214, le_load(req + 72, 4) & miscselect, 4);
    memcpy(deps + 222, padding, 352);
    cmac(root, deps, sizeof deps, key);
    return PyBytes_FromStringAndSize((const char *)key, 16);
}

static PyMethodDef methods[] = {
    {"cmac128", (PyCFunction)(void (*)(void))py_cmac128, METH_FASTCALL,
     "cmac128(key, data) -> bytes: AES-128-CMAC (16 bytes) of data under a 16-byte key."},
    {"einittoken_key", (PyCFunction)(void (*)(void))py_einittoken_key, METH_FASTCALL,
     "einittoken_key(keyrequest, root_key, seal_fuses, owner_epoch, cpu_cpusvn, attributes, "
     "xfrm, isvprodid, isvsvn, mrsigner, miscselect, padding) -> bytes | None: EGETKEY's "
     "EINITTOKEN_KEY in its success case; None for anything else (run the Python leaf)."},
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
