/*
 * sgxlaunch.cpu._paging — an optional native fast path for ENCLS[EWB] and ENCLS[ELDU/ELDB].
 *
 * The Python leaves in processor.py are the specification: every check, its order and every
 * status or fault lives there. This module only *confirms* that a call is the ordinary success
 * case (every check the Python leaf makes passes) and then performs exactly the Python leaf's
 * effects on the same state objects: the same cipher call on the same cryptography AESGCM
 * object, the same bytes left in the same buffers, the same EPCM entries and the same enclave
 * bookkeeping. Whenever any check would not pass — or anything is of a shape this file does not
 * expect — it returns None and the Python leaf runs from the start, so failures have one
 * implementation: its methods ewb/eldu/eldb take the Python leaf's arguments and call that leaf
 * (python_ewb/python_eldu/python_eldb) themselves. tests/cpu/test_paging_native.py runs both
 * paths side by side.
 *
 * State it reads and writes (sgxlaunch.cpu.state.EpcState's, handed over once by PagingLeaves):
 *   epc             bytearray, the EPC contents
 *   valid, ptype, perm, blocked        bytearrays, one byte per EPC page (the EPCM)
 *   blocked_epoch, linaddr, owner      lists, one item per EPC page
 *   page_views      list of memoryviews, one 4 KiB view of the EPC per page
 *   page_region     dict page number -> Region (ordinary memory: base, end, buf)
 *   secs_state      dict EPC index -> SecsState for every valid PT_SECS page
 *   shared          bytearray(16): [0:8] the per-boot EWB version counter, [8:16] the memory-map
 *                   generation (EpcState.allocate/release bump it), both u64 little-endian
 *   sealed          bytearray(4096 + 16): ciphertext || tag scratch
 *   encrypt_into / decrypt_into        the AESGCM object's bound methods
 *
 * SecsState and Region use __slots__; their slots are read at the offsets their member
 * descriptors publish, after an exact type check.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#define PAGE 4096u
#define PAGE_MASK 4095u
#define PT_TCS 1u
#define PT_REG 2u
#define PT_VA 3u
#define SECINFO_RESERVED (~(uint64_t)(0x3Fu | (0xFFu << 8)))
#define NCACHE 4

static inline uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

static inline void store_le64(unsigned char *p, uint64_t v) {
    for (int k = 0; k < 8; k++) {
        p[k] = (unsigned char)(v & 0xFF);
        v >>= 8;
    }
}

static inline int all_zero(const unsigned char *p, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (p[k]) return 0;
    return 1;
}

/* A region found through page_region, valid while the memory-map generation is unchanged. */
typedef struct {
    uint64_t generation, base, end;
    unsigned char *data;
    int used;
} CachedRegion;

typedef struct {
    PyObject_HEAD
    PyObject *epc, *valid, *ptype, *perm, *blocked;
    PyObject *blocked_epoch, *linaddr, *owner, *page_views;
    PyObject *page_region, *secs_state, *shared, *sealed;
    PyObject *encrypt_into, *decrypt_into, *invalid_tag, *success;
    PyObject *enclave_type, *region_type;
    PyObject *python_ewb, *python_eldu, *python_eldb; /* the Python leaves */
    uint64_t epc_base;
    Py_ssize_t n;
    /* Slot offsets. */
    Py_ssize_t e_epoch, e_tracking, e_eid, e_children, e_pages, e_baseaddr, e_size;
    Py_ssize_t r_base, r_end, r_buf;
    CachedRegion cache[NCACHE];
    unsigned next_victim;
} Accel;

/* An exact int in [0, 2**64) into *out: 0, or -1 (no exception set) when it is anything else. */
static int as_u64(PyObject *o, uint64_t *out) {
    if (o == NULL || !PyLong_CheckExact(o)) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* negative or too large: the Python leaf decides what that means */
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* The object in the slot at `offset` of `obj` (borrowed; NULL when unset). */
static inline PyObject *slot(PyObject *obj, Py_ssize_t offset) {
    return *(PyObject **)((char *)obj + offset);
}

/* Store a new reference in a slot (the slot's old value is released). */
static inline void slot_set(PyObject *obj, Py_ssize_t offset, PyObject *value) {
    PyObject **p = (PyObject **)((char *)obj + offset);
    PyObject *old = *p;
    *p = value;
    Py_XDECREF(old);
}

static inline int slot_u64(PyObject *obj, Py_ssize_t offset, uint64_t *out) {
    return as_u64(slot(obj, offset), out);
}

static inline uint64_t map_generation(Accel *a) {
    return load_le64((unsigned char *)PyByteArray_AS_STRING(a->shared) + 8);
}

/* Pointer to [address, address + length) in ordinary memory, or NULL (no exception) when no
 * single region holds it. */
static unsigned char *region_ptr(Accel *a, uint64_t address, uint64_t length) {
    uint64_t gen = map_generation(a);
    for (int k = 0; k < NCACHE; k++) {
        CachedRegion *c = &a->cache[k];
        if (c->used && c->generation == gen && address >= c->base && address < c->end &&
            length <= c->end - address)
            return c->data + (address - c->base);
    }
    PyObject *key = PyLong_FromUnsignedLongLong(address >> 12);
    if (key == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *region = PyDict_GetItemWithError(a->page_region, key); /* borrowed */
    Py_DECREF(key);
    if (region == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (Py_TYPE(region) != (PyTypeObject *)a->region_type) return NULL;
    uint64_t base, end;
    PyObject *buf = slot(region, a->r_buf);
    if (slot_u64(region, a->r_base, &base) || slot_u64(region, a->r_end, &end) || buf == NULL ||
        !PyByteArray_CheckExact(buf) || end < base ||
        (uint64_t)PyByteArray_GET_SIZE(buf) != end - base)
        return NULL;
    CachedRegion *c = &a->cache[a->next_victim++ % NCACHE];
    c->generation = gen;
    c->base = base;
    c->end = end;
    c->data = (unsigned char *)PyByteArray_AS_STRING(buf); /* fixed: region.view exports it */
    c->used = 1;
    if (address < base || address >= end || length > end - address) return NULL;
    return c->data + (address - base);
}

static int state_ok(Accel *a) {
    return PyByteArray_GET_SIZE(a->valid) == a->n && PyByteArray_GET_SIZE(a->ptype) == a->n &&
           PyByteArray_GET_SIZE(a->perm) == a->n && PyByteArray_GET_SIZE(a->blocked) == a->n &&
           PyList_GET_SIZE(a->blocked_epoch) == a->n && PyList_GET_SIZE(a->linaddr) == a->n &&
           PyList_GET_SIZE(a->owner) == a->n && PyList_GET_SIZE(a->page_views) == a->n &&
           PyByteArray_GET_SIZE(a->epc) == a->n * (Py_ssize_t)PAGE &&
           PyByteArray_GET_SIZE(a->shared) == 16 &&
           PyByteArray_GET_SIZE(a->sealed) == (Py_ssize_t)PAGE + 16;
}

/* cipher(nonce(version), data, aad(flags, eid, linaddr), out) through the AESGCM method. */
static PyObject *call_cipher(PyObject *method, uint64_t version, PyObject *data, uint64_t flags,
                             uint64_t eid, uint64_t linaddr, PyObject *out) {
    unsigned char nonce[12] = {0}, aad[24];
    store_le64(nonce, version);
    store_le64(aad, flags);
    store_le64(aad + 8, eid);
    store_le64(aad + 16, linaddr);
    PyObject *nonce_b = PyBytes_FromStringAndSize((const char *)nonce, 12);
    PyObject *aad_b = PyBytes_FromStringAndSize((const char *)aad, 24);
    PyObject *res = NULL;
    if (nonce_b != NULL && aad_b != NULL && data != NULL && out != NULL) {
        PyObject *call[4] = {nonce_b, data, aad_b, out};
        res = PyObject_Vectorcall(method, call, 4, NULL);
    }
    Py_XDECREF(nonce_b);
    Py_XDECREF(aad_b);
    return res;
}

#define FALLBACK Py_RETURN_NONE

/* EWB(pageinfo, epc_page, va_slot): SgxStatus.SUCCESS, or None for "run the Python leaf". */
static PyObject *ewb_fast(Accel *a, PyObject *const *args) {
    uint64_t pageinfo, epc_page, va_slot;
    if (as_u64(args[0], &pageinfo) || as_u64(args[1], &epc_page) || as_u64(args[2], &va_slot))
        FALLBACK;
    if (!state_ok(a) || pageinfo & 31) FALLBACK;
    const unsigned char *pi = region_ptr(a, pageinfo, 32);
    if (pi == NULL) FALLBACK;
    uint64_t linaddr_in = load_le64(pi), dest = load_le64(pi + 8), pcmd = load_le64(pi + 16),
             secs_field = load_le64(pi + 24);
    if ((dest | epc_page) & PAGE_MASK || pcmd & 127 || va_slot & 7) FALLBACK;
    if (linaddr_in || secs_field) FALLBACK;
    uint64_t n = (uint64_t)a->n;
    if (epc_page < a->epc_base || va_slot < a->epc_base) FALLBACK;
    uint64_t i = (epc_page - a->epc_base) >> 12;
    uint64_t va_off = va_slot - a->epc_base;
    uint64_t v = va_off >> 12;
    if (i >= n || v >= n || v == i) FALLBACK;
    unsigned char *valid = (unsigned char *)PyByteArray_AS_STRING(a->valid);
    unsigned char *ptypes = (unsigned char *)PyByteArray_AS_STRING(a->ptype);
    if (!valid[i] || !valid[v] || ptypes[v] != PT_VA) FALLBACK;
    unsigned ptype = ptypes[i];
    if (ptype != PT_REG && ptype != PT_TCS) FALLBACK; /* SECS/VA evictions: Python */
    PyObject *owner = PyList_GET_ITEM(a->owner, (Py_ssize_t)i);
    if (Py_TYPE(owner) != (PyTypeObject *)a->enclave_type) FALLBACK;
    unsigned char *blocked = (unsigned char *)PyByteArray_AS_STRING(a->blocked);
    if (!blocked[i]) FALLBACK;
    uint64_t epoch, blocked_epoch, tracking, eid, linaddr;
    if (slot_u64(owner, a->e_epoch, &epoch) ||
        as_u64(PyList_GET_ITEM(a->blocked_epoch, (Py_ssize_t)i), &blocked_epoch) ||
        slot_u64(owner, a->e_tracking, &tracking) || slot_u64(owner, a->e_eid, &eid))
        FALLBACK;
    if (epoch <= blocked_epoch || tracking) FALLBACK;
    unsigned char *epc = (unsigned char *)PyByteArray_AS_STRING(a->epc);
    if (load_le64(epc + va_off)) FALLBACK;
    unsigned char *dst = region_ptr(a, dest, PAGE);
    if (dst == NULL) FALLBACK;
    unsigned char *pc = region_ptr(a, pcmd, 128);
    if (pc == NULL) FALLBACK;
    PyObject *linaddr_obj = PyList_GET_ITEM(a->linaddr, (Py_ssize_t)i);
    PyObject *children = slot(owner, a->e_children), *pages = slot(owner, a->e_pages);
    if (as_u64(linaddr_obj, &linaddr) || children == NULL || !PyLong_CheckExact(children) ||
        pages == NULL || !PyDict_CheckExact(pages))
        FALLBACK;

    /* Every check passed: the effects of the Python leaf, in its order. */
    Py_INCREF(owner); /* held across the calls below (the EPCM lists drop their references) */
    Py_INCREF(linaddr_obj);
    Py_INCREF(pages);
    PyObject *result = NULL;
    unsigned char *shared = (unsigned char *)PyByteArray_AS_STRING(a->shared);
    uint64_t version = load_le64(shared) + 1;
    store_le64(shared, version);
    uint64_t flags = ((uint64_t)ptype << 8) | ((unsigned char *)PyByteArray_AS_STRING(a->perm))[i];
    /* Sealed into the scratch buffer (hot in cache), then copied out, as the Python leaf does:
     * the page first, then the PCMD (which may overlap it). */
    PyObject *res = call_cipher(a->encrypt_into, version,
                                PyList_GET_ITEM(a->page_views, (Py_ssize_t)i), flags, eid,
                                linaddr, a->sealed);
    if (res == NULL) goto done;
    Py_DECREF(res);
    const unsigned char *sealed = (const unsigned char *)PyByteArray_AS_STRING(a->sealed);
    memcpy(dst, sealed, PAGE);
    store_le64(pc, flags);
    memset(pc + 8, 0, 56);
    store_le64(pc + 64, eid);
    memset(pc + 72, 0, 40);
    memcpy(pc + 112, sealed + PAGE, 16);
    store_le64(epc + va_off, version);
    /* PAGEINFO.LINADDR := EPCM.ENCLAVEADDRESS (SDM EWB), after the PCMD as the Python leaf. */
    store_le64((unsigned char *)pi, linaddr);
    /* The page leaves the EPC: owner.children -= 1; drop pages[linaddr] if it names this page. */
    PyObject *one = PyLong_FromLong(1);
    PyObject *fewer = one == NULL ? NULL : PyNumber_Subtract(slot(owner, a->e_children), one);
    Py_XDECREF(one);
    if (fewer == NULL) goto done;
    slot_set(owner, a->e_children, fewer);
    PyObject *cur = PyDict_GetItemWithError(pages, linaddr_obj);
    if (cur == NULL && PyErr_Occurred()) goto done;
    if (cur != NULL) {
        PyObject *i_obj = PyLong_FromUnsignedLongLong(i);
        int eq = i_obj == NULL ? -1 : PyObject_RichCompareBool(cur, i_obj, Py_EQ);
        Py_XDECREF(i_obj);
        if (eq < 0 || (eq && PyDict_DelItem(pages, linaddr_obj) < 0)) goto done;
    }
    valid[i] = 0;
    ptypes[i] = 0;
    ((unsigned char *)PyByteArray_AS_STRING(a->perm))[i] = 0;
    blocked[i] = 0;
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL || PyList_SetItem(a->linaddr, (Py_ssize_t)i, zero) < 0) goto done;
    Py_INCREF(Py_None);
    if (PyList_SetItem(a->owner, (Py_ssize_t)i, Py_None) < 0) goto done;
    Py_INCREF(a->success);
    result = a->success;
done:
    Py_DECREF(pages);
    Py_DECREF(linaddr_obj);
    Py_DECREF(owner);
    return result;
}

/* ELDU/ELDB(pageinfo, epc_page, va_slot): SgxStatus.SUCCESS, or None. */
static PyObject *eld_fast(Accel *a, PyObject *const *args, int blocked_flag) {
    uint64_t pageinfo, epc_page, va_slot;
    if (as_u64(args[0], &pageinfo) || as_u64(args[1], &epc_page) || as_u64(args[2], &va_slot))
        FALLBACK;
    if (!state_ok(a) || pageinfo & 31) FALLBACK;
    const unsigned char *pi = region_ptr(a, pageinfo, 32);
    if (pi == NULL) FALLBACK;
    uint64_t linaddr = load_le64(pi), src = load_le64(pi + 8), pcmd = load_le64(pi + 16),
             secs_addr = load_le64(pi + 24);
    if ((src | secs_addr | epc_page) & PAGE_MASK || pcmd & 127 || va_slot & 7) FALLBACK;
    uint64_t n = (uint64_t)a->n, epc_end = a->epc_base + n * PAGE;
    if (epc_page < a->epc_base || va_slot < a->epc_base || secs_addr < a->epc_base) FALLBACK;
    uint64_t i = (epc_page - a->epc_base) >> 12;
    uint64_t va_off = va_slot - a->epc_base;
    uint64_t v = va_off >> 12;
    if (i >= n || v >= n) FALLBACK;
    unsigned char *valid = (unsigned char *)PyByteArray_AS_STRING(a->valid);
    unsigned char *ptypes = (unsigned char *)PyByteArray_AS_STRING(a->ptype);
    if (valid[i] || !valid[v] || ptypes[v] != PT_VA) FALLBACK;
    if ((pcmd >= a->epc_base && pcmd < epc_end) || (src >= a->epc_base && src < epc_end))
        FALLBACK; /* the abort page: the Python leaf refuses it */
    const unsigned char *pc = region_ptr(a, pcmd, 128);
    if (pc == NULL) FALLBACK;
    uint64_t flags = load_le64(pc), pcmd_eid = load_le64(pc + 64);
    if (flags & SECINFO_RESERVED || !all_zero(pc + 8, 56) || !all_zero(pc + 72, 40)) FALLBACK;
    unsigned ptype = (unsigned)((flags >> 8) & 0xFF);
    if (ptype != PT_REG && ptype != PT_TCS) FALLBACK; /* SECS/VA pages: Python */
    unsigned char tag[16];
    memcpy(tag, pc + 112, 16);
    PyObject *key = PyLong_FromUnsignedLongLong((secs_addr - a->epc_base) >> 12);
    if (key == NULL) return NULL;
    PyObject *enclave = PyDict_GetItemWithError(a->secs_state, key); /* borrowed */
    Py_DECREF(key);
    if (enclave == NULL) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK;
    }
    if (Py_TYPE(enclave) != (PyTypeObject *)a->enclave_type) FALLBACK;
    uint64_t eid, baseaddr, size;
    if (slot_u64(enclave, a->e_eid, &eid) || slot_u64(enclave, a->e_baseaddr, &baseaddr) ||
        slot_u64(enclave, a->e_size, &size))
        FALLBACK;
    if (linaddr & PAGE_MASK || linaddr < baseaddr || linaddr - baseaddr >= size) FALLBACK;
    if (pcmd_eid != eid) FALLBACK;
    PyObject *children = slot(enclave, a->e_children), *pages = slot(enclave, a->e_pages),
             *epoch = slot(enclave, a->e_epoch);
    if (children == NULL || !PyLong_CheckExact(children) || pages == NULL ||
        !PyDict_CheckExact(pages) || epoch == NULL)
        FALLBACK;
    unsigned char *epc = (unsigned char *)PyByteArray_AS_STRING(a->epc);
    uint64_t version = load_le64(epc + va_off);
    const unsigned char *s = region_ptr(a, src, PAGE);
    if (s == NULL) FALLBACK;

    Py_INCREF(enclave); /* held across the calls below */
    PyObject *result = NULL;
    /* The cipher wants ciphertext || tag in one buffer: the scratch buffer, as in the Python
     * leaf. */
    unsigned char *sealed = (unsigned char *)PyByteArray_AS_STRING(a->sealed);
    memcpy(sealed, s, PAGE);
    memcpy(sealed + PAGE, tag, 16);
    PyObject *res = call_cipher(a->decrypt_into, version, a->sealed, flags, eid, linaddr,
                                PyList_GET_ITEM(a->page_views, (Py_ssize_t)i));
    if (res == NULL) {
        /* A failed MAC: the Python leaf repeats the call and reports SGX_MAC_COMPARE_FAIL. */
        if (PyErr_ExceptionMatches(a->invalid_tag)) {
            PyErr_Clear();
            Py_INCREF(Py_None);
            result = Py_None;
        }
        goto done;
    }
    Py_DECREF(res);
    store_le64(epc + va_off, 0);
    valid[i] = 1;
    ptypes[i] = (unsigned char)ptype;
    /* R, W, X and the SGX2 PENDING / MODIFIED / PR bits travel in SECINFO.FLAGS. */
    ((unsigned char *)PyByteArray_AS_STRING(a->perm))[i] = (unsigned char)(flags & 0x3F);
    PyObject *lin = PyLong_FromUnsignedLongLong(linaddr);
    if (lin == NULL || PyList_SetItem(a->linaddr, (Py_ssize_t)i, lin) < 0) goto done;
    Py_INCREF(enclave);
    if (PyList_SetItem(a->owner, (Py_ssize_t)i, enclave) < 0) goto done;
    ((unsigned char *)PyByteArray_AS_STRING(a->blocked))[i] = (unsigned char)blocked_flag;
    /* enclave.children += 1; enclave.pages[linaddr] = i; blocked_epoch[i] = enclave.epoch */
    PyObject *one = PyLong_FromLong(1);
    PyObject *more = one == NULL ? NULL : PyNumber_Add(slot(enclave, a->e_children), one);
    Py_XDECREF(one);
    if (more == NULL) goto done;
    slot_set(enclave, a->e_children, more);
    PyObject *i_obj = PyLong_FromUnsignedLongLong(i);
    int rr = i_obj == NULL ? -1
                           : PyDict_SetItem(slot(enclave, a->e_pages),
                                            PyList_GET_ITEM(a->linaddr, (Py_ssize_t)i), i_obj);
    Py_XDECREF(i_obj);
    if (rr < 0) goto done;
    epoch = slot(enclave, a->e_epoch);
    Py_INCREF(epoch);
    if (PyList_SetItem(a->blocked_epoch, (Py_ssize_t)i, epoch) < 0) goto done;
    Py_INCREF(a->success);
    result = a->success;
done:
    Py_DECREF(enclave);
    return result;
}

/* The leaf as Processor exposes it: the fast path, else the Python leaf with the same call. */
static PyObject *leaf(Accel *a, PyObject *(*fast)(Accel *, PyObject *const *, int), int flag,
                      PyObject *python_leaf, PyObject *const *args, size_t nargsf,
                      PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 3 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)) {
        PyObject *r = fast(a, args, flag);
        if (r != Py_None) return r; /* the status, or NULL with an exception */
        Py_DECREF(r);
    }
    return PyObject_Vectorcall(python_leaf, args, nargs, kwnames);
}

static PyObject *ewb_fast_flag(Accel *a, PyObject *const *args, int flag) {
    (void)flag;
    return ewb_fast(a, args);
}

static PyObject *Accel_ewb(Accel *a, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return leaf(a, ewb_fast_flag, 0, a->python_ewb, args, nargsf, kwnames);
}

static PyObject *Accel_eldu(Accel *a, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return leaf(a, eld_fast, 0, a->python_eldu, args, nargsf, kwnames);
}

static PyObject *Accel_eldb(Accel *a, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return leaf(a, eld_fast, 1, a->python_eldb, args, nargsf, kwnames);
}

static int Accel_traverse(Accel *a, visitproc visit, void *arg) {
    Py_VISIT(a->epc);
    Py_VISIT(a->valid);
    Py_VISIT(a->ptype);
    Py_VISIT(a->perm);
    Py_VISIT(a->blocked);
    Py_VISIT(a->blocked_epoch);
    Py_VISIT(a->linaddr);
    Py_VISIT(a->owner);
    Py_VISIT(a->page_views);
    Py_VISIT(a->page_region);
    Py_VISIT(a->secs_state);
    Py_VISIT(a->shared);
    Py_VISIT(a->sealed);
    Py_VISIT(a->encrypt_into);
    Py_VISIT(a->decrypt_into);
    Py_VISIT(a->invalid_tag);
    Py_VISIT(a->success);
    Py_VISIT(a->enclave_type);
    Py_VISIT(a->region_type);
    Py_VISIT(a->python_ewb);
    Py_VISIT(a->python_eldu);
    Py_VISIT(a->python_eldb);
    return 0;
}

static int Accel_clear(Accel *a) {
    Py_CLEAR(a->epc);
    Py_CLEAR(a->valid);
    Py_CLEAR(a->ptype);
    Py_CLEAR(a->perm);
    Py_CLEAR(a->blocked);
    Py_CLEAR(a->blocked_epoch);
    Py_CLEAR(a->linaddr);
    Py_CLEAR(a->owner);
    Py_CLEAR(a->page_views);
    Py_CLEAR(a->page_region);
    Py_CLEAR(a->secs_state);
    Py_CLEAR(a->shared);
    Py_CLEAR(a->sealed);
    Py_CLEAR(a->encrypt_into);
    Py_CLEAR(a->decrypt_into);
    Py_CLEAR(a->invalid_tag);
    Py_CLEAR(a->success);
    Py_CLEAR(a->enclave_type);
    Py_CLEAR(a->region_type);
    Py_CLEAR(a->python_ewb);
    Py_CLEAR(a->python_eldu);
    Py_CLEAR(a->python_eldb);
    return 0;
}

static void Accel_dealloc(Accel *a) {
    PyObject_GC_UnTrack(a);
    Accel_clear(a);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

/* Offset of the object slot `name` of `type` (a __slots__ member), or -1 with an exception. */
static Py_ssize_t slot_offset(PyObject *type, const char *name) {
    PyObject *d = PyObject_GetAttrString(type, name);
    if (d == NULL) return -1;
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY)) offset = m->offset;
    }
    Py_DECREF(d);
    if (offset < (Py_ssize_t)sizeof(PyObject))
        PyErr_Format(PyExc_TypeError, "%s is not a writable __slots__ attribute", name);
    return offset < (Py_ssize_t)sizeof(PyObject) ? -1 : offset;
}

static PyObject *Accel_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"epc",          "epc_base",     "valid",         "ptype",
                             "perm",         "blocked",      "blocked_epoch", "linaddr",
                             "owner",        "page_views",   "page_region",   "secs_state",
                             "shared",       "sealed",       "encrypt_into",  "decrypt_into",
                             "invalid_tag",  "success",      "enclave_type",  "region_type",
                             "python_ewb",   "python_eldu",  "python_eldb",   NULL};
    PyObject *epc, *epc_base, *valid, *ptype, *perm, *blocked, *blocked_epoch, *linaddr, *owner,
        *page_views, *page_region, *secs_state, *shared, *sealed, *encrypt_into, *decrypt_into,
        *invalid_tag, *success, *enclave_type, *region_type, *python_ewb, *python_eldu,
        *python_eldb;
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "PagingAccelerator takes keyword arguments only");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "O!OO!O!O!O!O!O!O!O!O!O!O!O!OOOOO!O!OOO", kwlist, &PyByteArray_Type, &epc,
            &epc_base, &PyByteArray_Type, &valid, &PyByteArray_Type, &ptype, &PyByteArray_Type,
            &perm, &PyByteArray_Type, &blocked, &PyList_Type, &blocked_epoch, &PyList_Type,
            &linaddr, &PyList_Type, &owner, &PyList_Type, &page_views, &PyDict_Type,
            &page_region, &PyDict_Type, &secs_state, &PyByteArray_Type, &shared,
            &PyByteArray_Type, &sealed, &encrypt_into, &decrypt_into, &invalid_tag, &success,
            &PyType_Type, &enclave_type, &PyType_Type, &region_type, &python_ewb, &python_eldu,
            &python_eldb))
        return NULL;
    if (!PyCallable_Check(python_ewb) || !PyCallable_Check(python_eldu) ||
        !PyCallable_Check(python_eldb) || !PyCallable_Check(encrypt_into) ||
        !PyCallable_Check(decrypt_into)) {
        PyErr_SetString(PyExc_TypeError, "the leaves and cipher methods must be callable");
        return NULL;
    }
    uint64_t base;
    if (as_u64(epc_base, &base) || base & PAGE_MASK) {
        PyErr_SetString(PyExc_ValueError, "epc_base must be a page-aligned u64");
        return NULL;
    }
    Py_ssize_t n = PyByteArray_GET_SIZE(valid);
    if (PyByteArray_GET_SIZE(epc) != n * (Py_ssize_t)PAGE || base + (uint64_t)n * PAGE < base) {
        PyErr_SetString(PyExc_ValueError, "the EPC and the EPCM arrays disagree in size");
        return NULL;
    }
    if (!PyExceptionClass_Check(invalid_tag)) {
        PyErr_SetString(PyExc_TypeError, "invalid_tag must be an exception class");
        return NULL;
    }
    Py_ssize_t offs[10];
    const char *names[10] = {"epoch", "tracking_threads", "eid", "children", "pages",
                             "baseaddr", "size", "base", "end", "buf"};
    for (int k = 0; k < 10; k++)
        if ((offs[k] = slot_offset(k < 7 ? enclave_type : region_type, names[k])) < 0)
            return NULL;
    Accel *a = (Accel *)type->tp_alloc(type, 0);
    if (a == NULL) return NULL;
#define KEEP(field) \
    Py_INCREF(field); \
    a->field = field
    KEEP(epc);
    KEEP(valid);
    KEEP(ptype);
    KEEP(perm);
    KEEP(blocked);
    KEEP(blocked_epoch);
    KEEP(linaddr);
    KEEP(owner);
    KEEP(page_views);
    KEEP(page_region);
    KEEP(secs_state);
    KEEP(shared);
    KEEP(sealed);
    KEEP(encrypt_into);
    KEEP(decrypt_into);
    KEEP(invalid_tag);
    KEEP(success);
    KEEP(enclave_type);
    KEEP(region_type);
    KEEP(python_ewb);
    KEEP(python_eldu);
    KEEP(python_eldb);
#undef KEEP
    a->epc_base = base;
    a->n = n;
    a->e_epoch = offs[0];
    a->e_tracking = offs[1];
    a->e_eid = offs[2];
    a->e_children = offs[3];
    a->e_pages = offs[4];
    a->e_baseaddr = offs[5];
    a->e_size = offs[6];
    a->r_base = offs[7];
    a->r_end = offs[8];
    a->r_buf = offs[9];
    return (PyObject *)a;
}

static PyMethodDef Accel_methods[] = {
    {"ewb", (PyCFunction)(void (*)(void))Accel_ewb, METH_FASTCALL | METH_KEYWORDS,
     "ENCLS[EWB]: the success case natively, anything else through the Python leaf."},
    {"eldu", (PyCFunction)(void (*)(void))Accel_eldu, METH_FASTCALL | METH_KEYWORDS,
     "ENCLS[ELDU]: the success case natively, anything else through the Python leaf."},
    {"eldb", (PyCFunction)(void (*)(void))Accel_eldb, METH_FASTCALL | METH_KEYWORDS,
     "ENCLS[ELDB]: the success case natively, anything else through the Python leaf."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AccelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sgxlaunch.cpu._paging.PagingAccelerator",
    .tp_basicsize = sizeof(Accel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Native fast path for the success case of EWB and ELDU/ELDB (see _paging.c).",
    .tp_new = Accel_new,
    .tp_dealloc = (destructor)Accel_dealloc,
    .tp_traverse = (traverseproc)Accel_traverse,
    .tp_clear = (inquiry)Accel_clear,
    .tp_methods = Accel_methods,
};

static struct PyModuleDef paging_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sgxlaunch.cpu._paging",
    .m_doc = "Optional native fast path for the emulated processor's paging leaves.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__paging(void) {
    if (PyType_Ready(&AccelType) < 0) return NULL;
    PyObject *m = PyModule_Create(&paging_module);
    if (m == NULL) return NULL;
    Py_INCREF(&AccelType);
    if (PyModule_AddObject(m, "PagingAccelerator", (PyObject *)&AccelType) < 0) {
        Py_DECREF(&AccelType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
