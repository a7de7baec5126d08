/* Wrap-break triggers of the redaction engine, found without Hyperscan (optional speed-up).
 *
 * A trigger is an LF that follows WRAP_MIN_WIDTH characters of the base64 alphabets, directly
 * or with one CR in between (engine.WRAP_TRIGGER). Hyperscan finds it with two expressions
 * beside the literals, at ~20 us per 64 KiB; here memchr finds each LF and a table tests the
 * bytes before it, stopping at the first byte outside the alphabet (most lines end in one).
 *
 * The functions only read their arguments (the buffer protocol, released before returning);
 * every index is checked against the buffer's bounds before it is read. engine.py checks
 * WRAP_ALPHABET and WRAP_MIN_WIDTH below against its own definitions before using the module,
 * and the property tests compare both functions with the regular-expression definition.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define WRAP_MIN_WIDTH 16
static const char WRAP_ALPHABET[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-";

static unsigned char is_wrap[256];

#if defined(__SSE2__)
#include <emmintrin.h>
#define HAVE_SSE2 1

/* Whether the 16 bytes at p are all wrap characters, in one compare per class; checked against
 * is_wrap for every byte value when the module loads. */
static inline int
all_wrap16(const unsigned char *p)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)p);
    /* OR 0x20 maps A-Z onto a-z and no other byte into a-z; bytes >= 0x80 are negative in
     * the signed compares, so they fail every range. */
    const __m128i low = _mm_or_si128(v, _mm_set1_epi8(0x20));
    const __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(low, _mm_set1_epi8('a' - 1)),
                                         _mm_cmplt_epi8(low, _mm_set1_epi8('z' + 1)));
    const __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                        _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
    const __m128i sign = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('+')),
                                      _mm_cmpeq_epi8(v, _mm_set1_epi8('/')));
    const __m128i dash = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('_')),
                                      _mm_cmpeq_epi8(v, _mm_set1_epi8('-')));
    const __m128i ok = _mm_or_si128(_mm_or_si128(letter, digit), _mm_or_si128(sign, dash));
    return _mm_movemask_epi8(ok) == 0xFFFF;
}
#else
#define HAVE_SSE2 0
#endif

/* Whether the WRAP_MIN_WIDTH bytes before data[end] are all wrap characters; bytes before
 * data[0] are read from the end of behind (which may be empty). */
static int
run_before(const unsigned char *data, Py_ssize_t end, const unsigned char *behind,
           Py_ssize_t behind_len)
{
#if HAVE_SSE2
    if (end >= 16)
        return all_wrap16(data + end - 16);
#endif
    Py_ssize_t need = WRAP_MIN_WIDTH;
    Py_ssize_t i = end - 1;
    while (need > 0 && i >= 0) {
        if (!is_wrap[data[i]])
            return 0;
        i--;
        need--;
    }
    i = behind_len - 1;
    while (need > 0 && i >= 0) {
        if (!is_wrap[behind[i]])
            return 0;
        i--;
        need--;
    }
    return need == 0;
}

/* The LF positions of data[from:to], in order: 16 bytes per compare, then memchr. */
typedef struct {
    const unsigned char *data;
    Py_ssize_t pos;
    Py_ssize_t to;
    Py_ssize_t base;
    unsigned int mask;
} lf_iter;

static inline Py_ssize_t
next_lf(lf_iter *it)
{
#if HAVE_SSE2
    for (;;) {
        if (it->mask) {
            unsigned int bit = (unsigned int)__builtin_ctz(it->mask);
            it->mask &= it->mask - 1;
            return it->base + (Py_ssize_t)bit;
        }
        if (it->to - it->pos < 16)
            break;
        const __m128i v = _mm_loadu_si128((const __m128i *)(it->data + it->pos));
        it->mask = (unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')));
        it->base = it->pos;
        it->pos += 16;
    }
#endif
    if (it->pos < it->to) {
        const unsigned char *hit = memchr(it->data + it->pos, '\n', (size_t)(it->to - it->pos));
        if (hit != NULL) {
            it->pos = (hit - it->data) + 1;
            return it->pos - 1;
        }
        it->pos = it->to;
    }
    return -1;
}

static int
get_buffer(PyObject *obj, Py_buffer *view, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object", what);
        return -1;
    }
    return 0;
}

static int
append_int(PyObject *list, Py_ssize_t value)
{
    PyObject *item = PyLong_FromSsize_t(value);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

PyDoc_STRVAR(wrap_newlines_doc,
"wrap_newlines(data, skip, /)\n--\n\n"
"Positions >= skip of the LF bytes in data that follow WRAP_MIN_WIDTH wrap characters,\n"
"directly or with one CR in between (engine.wrap_newlines).");

static PyObject *
wrap_newlines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wrap_newlines() takes exactly 2 arguments");
        return NULL;
    }
    Py_ssize_t skip = PyLong_AsSsize_t(args[1]);
    if (skip == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (get_buffer(args[0], &view, "data") < 0)
        return NULL;
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        goto fail;
    lf_iter it = {data, skip < 0 ? 0 : skip, size, 0, 0};
    Py_ssize_t nl;
    while ((nl = next_lf(&it)) >= 0) {
        Py_ssize_t end = (nl >= 1 && data[nl - 1] == '\r') ? nl - 1 : nl;
        if (run_before(data, end, NULL, 0) && append_int(out, nl) < 0)
            goto fail;
    }
    PyBuffer_Release(&view);
    return out;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

PyDoc_STRVAR(wrap_breaks_doc,
"wrap_breaks(data, behind, /)\n--\n\n"
"(start, end) of the line breaks in data that may sit inside a wrapped encoding: an LF or\n"
"CR LF after WRAP_MIN_WIDTH wrap characters (read on into behind, the text before data),\n"
"starting after data's first byte and followed by a wrap character (stream._wrap_breaks).");

static PyObject *
wrap_breaks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wrap_breaks() takes exactly 2 arguments");
        return NULL;
    }
    Py_buffer view, behind_view;
    if (get_buffer(args[0], &view, "data") < 0)
        return NULL;
    if (get_buffer(args[1], &behind_view, "behind") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    const unsigned char *behind = (const unsigned char *)behind_view.buf;
    Py_ssize_t size = view.len;
    Py_ssize_t behind_len = behind_view.len;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        goto fail;
    /* An LF at 0 cannot start a break after the first byte; the last byte has no next one. */
    lf_iter it = {data, 1, size - 1, 0, 0};
    Py_ssize_t nl;
    while ((nl = next_lf(&it)) >= 0) { /* 1 <= nl <= size - 2 */
        if (!is_wrap[data[nl + 1]])
            continue;
        Py_ssize_t start = data[nl - 1] == '\r' ? nl - 1 : nl;
        if (start < 1 || !run_before(data, start, behind, behind_len))
            continue;
        PyObject *item = Py_BuildValue("(nn)", start, nl + 1);
        if (item == NULL)
            goto fail;
        int rc = PyList_Append(out, item);
        Py_DECREF(item);
        if (rc < 0)
            goto fail;
    }
    PyBuffer_Release(&behind_view);
    PyBuffer_Release(&view);
    return out;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&behind_view);
    PyBuffer_Release(&view);
    return NULL;
}

/* One copy of a stretch of the buffer into the joined text. */
typedef struct {
    Py_ssize_t from;
    Py_ssize_t to;
} piece;

static int
read_break(PyObject *item, Py_ssize_t *start, Py_ssize_t *end)
{
    if (!PyTuple_Check(item) || PyTuple_Size(item) != 2) {
        PyErr_SetString(PyExc_TypeError, "breaks must be (start, end) tuples");
        return -1;
    }
    *start = PyLong_AsSsize_t(PyTuple_GetItem(item, 0));
    if (*start == -1 && PyErr_Occurred())
        return -1;
    *end = PyLong_AsSsize_t(PyTuple_GetItem(item, 1));
    if (*end == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

PyDoc_STRVAR(joined_windows_doc,
"joined_windows(data, breaks, longest, span, /)\n--\n\n"
"The windows around the sorted, disjoint breaks with every break inside them removed,\n"
"concatenated: (text, segment joined starts, segment original starts, window ends in text),\n"
"as stream._joined_windows. Each break's window is [start - longest - 2, end + span).");

static PyObject *
joined_windows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "joined_windows() takes exactly 4 arguments");
        return NULL;
    }
    PyObject *breaks = args[1];
    if (!PyList_Check(breaks)) {
        PyErr_SetString(PyExc_TypeError, "breaks must be a list");
        return NULL;
    }
    Py_ssize_t longest = PyLong_AsSsize_t(args[2]);
    if (longest == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t span = PyLong_AsSsize_t(args[3]);
    if (span == -1 && PyErr_Occurred())
        return NULL;
    if (longest < 0 || span < 0 || longest > PY_SSIZE_T_MAX / 4 || span > PY_SSIZE_T_MAX / 4) {
        PyErr_SetString(PyExc_ValueError, "longest and span must be small non-negative ints");
        return NULL;
    }
    Py_ssize_t count = PyList_Size(breaks);
    if (count < 1) {
        PyErr_SetString(PyExc_ValueError, "breaks must not be empty");
        return NULL;
    }
    Py_buffer view;
    if (get_buffer(args[0], &view, "data") < 0)
        return NULL;
    const char *data = (const char *)view.buf;
    Py_ssize_t size = view.len;
    PyObject *text = NULL, *seg_j = NULL, *seg_o = NULL, *cuts = NULL, *out = NULL;
    /* Every break adds at most two pieces (the end of the window before, the text up to it);
     * the last window's end is one more. */
    piece *pieces = PyMem_Malloc(sizeof(piece) * (size_t)(2 * count + 1));
    if (pieces == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    seg_j = PyList_New(0);
    seg_o = PyList_New(0);
    cuts = PyList_New(0);
    if (seg_j == NULL || seg_o == NULL || cuts == NULL)
        goto done;
    Py_ssize_t npieces = 0, length = 0, cursor = 0, hi = -1, prev_end = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t b_start, b_end;
        if (read_break(PyList_GetItem(breaks, k), &b_start, &b_end) < 0)
            goto done;
        if (b_start < prev_end || b_end < b_start || b_end > size) {
            PyErr_SetString(PyExc_ValueError, "breaks must be sorted, disjoint and in data");
            goto done;
        }
        prev_end = b_end;
        Py_ssize_t lo = b_start - longest - 2;
        if (lo < 0)
            lo = 0;
        if (lo > hi) { /* a new window: close the one before */
            if (hi >= 0) {
                pieces[npieces++] = (piece){cursor, hi};
                length += hi - cursor;
                if (append_int(cuts, length) < 0)
                    goto done;
            }
            if (append_int(seg_j, length) < 0 || append_int(seg_o, lo) < 0)
                goto done;
            cursor = lo;
        }
        /* cursor <= b_start: the previous break ended before this one starts, and lo <= it */
        pieces[npieces++] = (piece){cursor, b_start};
        length += b_start - cursor;
        cursor = b_end;
        if (append_int(seg_j, length) < 0 || append_int(seg_o, cursor) < 0)
            goto done;
        hi = b_end + span < size ? b_end + span : size;
    }
    pieces[npieces++] = (piece){cursor, hi};
    length += hi - cursor;
    if (append_int(cuts, length) < 0)
        goto done;
    text = PyBytes_FromStringAndSize(NULL, length);
    if (text == NULL)
        goto done;
    char *dest = PyBytes_AsString(text);
    if (dest == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < npieces; k++) {
        Py_ssize_t n = pieces[k].to - pieces[k].from;
        memcpy(dest, data + pieces[k].from, (size_t)n);
        dest += n;
    }
    out = PyTuple_Pack(4, text, seg_j, seg_o, cuts);
done:
    PyMem_Free(pieces);
    Py_XDECREF(text);
    Py_XDECREF(seg_j);
    Py_XDECREF(seg_o);
    Py_XDECREF(cuts);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef linescan_methods[] = {
    {"wrap_newlines", (PyCFunction)(void (*)(void))wrap_newlines, METH_FASTCALL,
     wrap_newlines_doc},
    {"wrap_breaks", (PyCFunction)(void (*)(void))wrap_breaks, METH_FASTCALL, wrap_breaks_doc},
    {"joined_windows", (PyCFunction)(void (*)(void))joined_windows, METH_FASTCALL,
     joined_windows_doc},
    {NULL, NULL, 0, NULL},
};

static int
linescan_exec(PyObject *module)
{
    for (const char *c = WRAP_ALPHABET; *c; c++)
        is_wrap[(unsigned char)*c] = 1;
#if HAVE_SSE2
    /* The vector test must agree with the table for every byte value, in every lane. */
    for (int b = 0; b < 256; b++) {
        unsigned char block[16];
        memset(block, 'A', sizeof block);
        for (int lane = 0; lane < 16; lane++) {
            block[lane] = (unsigned char)b;
            if (all_wrap16(block) != is_wrap[b]) {
                PyErr_SetString(PyExc_ImportError, "_linescan: vector test disagrees");
                return -1;
            }
            block[lane] = 'A';
        }
    }
#endif
    if (PyModule_AddIntConstant(module, "WRAP_MIN_WIDTH", WRAP_MIN_WIDTH) < 0)
        return -1;
    PyObject *alphabet = PyBytes_FromString(WRAP_ALPHABET);
    if (alphabet == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "WRAP_ALPHABET", alphabet);
    Py_DECREF(alphabet);
    return rc;
}

static PyModuleDef_Slot linescan_slots[] = {
    {Py_mod_exec, linescan_exec},
    {0, NULL},
};

static struct PyModuleDef linescan_module = {
    PyModuleDef_HEAD_INIT,
    "_linescan",
    "Wrap-break triggers of the redaction engine (see engine.py).",
    0,
    linescan_methods,
    linescan_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__linescan(void)
{
    return PyModuleDef_Init(&linescan_module);
}
