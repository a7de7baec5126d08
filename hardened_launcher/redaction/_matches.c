/* Match collection and the greedy choice of the Hyperscan engine, in C (optional speed-up).
 *
 * Hyperscan reports the end of every pattern occurrence, overlapping, through a callback. The
 * engine's Python callback looked up each pattern's length, index and longer variants in Python
 * lists and dictionaries; right after a scan of a large database those objects are out of the
 * CPU caches, and at 1,000 values a 64 KiB write spent ~8 us there for ~11 matches
 * (benchmarks/redaction). Here a MatchTable keeps the same facts in flat arrays, a MatchSink
 * is the callback (it only records the expression and the end), and the sink turns its records
 * into candidates and makes the leftmost-longest choice afterwards. engine.HyperscanEngine keeps
 * the Python definition; the property tests compare both on every kind of input.
 *
 * Every index taken from an argument or a record is checked against the bounds of the array or
 * buffer it reads before it is used; a buffer is held only for the duration of one call.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 16 bytes per expression: the lookups after a scan miss the caches, so smaller is faster. */
typedef struct {
    uint32_t length;    /* the expression's pattern length */
    uint32_t index;     /* the pattern index reported for it */
    uint32_t ext_first; /* its longer patterns: exts[ext_first : ext_first + ext_count] */
    uint32_t ext_count;
} entry;

typedef struct {
    uint32_t offset; /* in the table's blob */
    uint32_t length;
    uint32_t index;
} extension;

/* Every count, length, index and offset of a table fits in 32 bits (checked when it is made). */
#define TABLE_MAX ((Py_ssize_t)UINT32_MAX)

typedef struct {
    PyObject_HEAD
    entry *entries;
    Py_ssize_t n_entries;
    extension *exts;
    Py_ssize_t n_exts;
    unsigned char *blob;
    Py_ssize_t blob_len;
} Table;

typedef struct {
    Py_ssize_t expr;
    Py_ssize_t to;
} record;

typedef struct {
    Py_ssize_t start;
    Py_ssize_t end;
    Py_ssize_t index;
    Py_ssize_t seq; /* order of arrival: the first of equal spans wins */
} candidate;

typedef struct {
    PyObject_HEAD
    record *records;
    Py_ssize_t n_records;
    Py_ssize_t cap_records;
    candidate *cands;
    Py_ssize_t n_cands;
    Py_ssize_t cap_cands;
} Sink;

typedef struct {
    PyObject *table_type;
    PyObject *sink_type;
} module_state;

/* ---- helpers ------------------------------------------------------------------------------ */

static int
grow(void **array, Py_ssize_t *cap, Py_ssize_t need, size_t item)
{
    if (need <= *cap)
        return 0;
    Py_ssize_t cap2 = *cap ? *cap : 64;
    while (cap2 < need) {
        if (cap2 > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)item) {
            PyErr_NoMemory();
            return -1;
        }
        cap2 *= 2;
    }
    void *grown = PyMem_Realloc(*array, (size_t)cap2 * item);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *array = grown;
    *cap = cap2;
    return 0;
}

/* A list of non-negative ints, ascending (``strict``: each greater than the one before). */
static Py_ssize_t *
int_array(PyObject *list, const char *what, Py_ssize_t *count, int strict)
{
    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of ints", what);
        return NULL;
    }
    Py_ssize_t n = PyList_Size(list);
    Py_ssize_t *out = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t v = PyLong_AsSsize_t(PyList_GetItem(list, i));
        if (v == -1 && PyErr_Occurred())
            goto fail;
        if (v < 0 || (i > 0 && (strict ? v <= out[i - 1] : v < out[i - 1]))) {
            PyErr_Format(PyExc_ValueError, "%s must be ascending and not negative", what);
            goto fail;
        }
        out[i] = v;
    }
    *count = n;
    return out;
fail:
    PyMem_Free(out);
    return NULL;
}

/* The number of items <= value (bisect_right). */
static inline Py_ssize_t
bisect_right(const Py_ssize_t *a, Py_ssize_t n, Py_ssize_t value)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (value < a[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* The longest end of the occurrence of ``e`` starting at ``start`` in data[:limit], and its
 * pattern index: a longer pattern sharing the expression's bytes wins where it is present. */
static inline Py_ssize_t
extend(const Table *t, const entry *e, const unsigned char *data, Py_ssize_t start,
       Py_ssize_t end, Py_ssize_t limit, Py_ssize_t *index)
{
    *index = (Py_ssize_t)e->index;
    for (uint32_t k = 0; k < e->ext_count; k++) {
        const extension *x = &t->exts[e->ext_first + k];
        if ((Py_ssize_t)x->length <= limit - start &&
            memcmp(data + start, t->blob + x->offset, (size_t)x->length) == 0) {
            *index = (Py_ssize_t)x->index;
            return start + (Py_ssize_t)x->length;
        }
    }
    return end;
}

/* ---- MatchTable --------------------------------------------------------------------------- */

static int table_fill(Table *self, PyObject *lengths, PyObject *indexes, PyObject *longer);

static void
table_clear(Table *self)
{
    if (self->blob != NULL) {
        /* The longer patterns are secrets' variants: zero this copy before it is freed (the
         * Python bytes it came from cannot be wiped; this one can). */
        volatile unsigned char *wipe = self->blob;
        for (Py_ssize_t i = 0; i < self->blob_len; i++)
            wipe[i] = 0;
    }
    PyMem_Free(self->entries);
    PyMem_Free(self->exts);
    PyMem_Free(self->blob);
    self->entries = NULL;
    self->exts = NULL;
    self->blob = NULL;
    self->n_entries = 0;
    self->n_exts = 0;
    self->blob_len = 0;
}

static int
table_init(PyObject *self_obj, PyObject *args, PyObject *kwargs)
{
    Table *self = (Table *)self_obj;
    PyObject *lengths, *indexes, *longer;
    static char *names[] = {"lengths", "indexes", "longer", NULL};
    if (self->entries != NULL) {
        PyErr_SetString(PyExc_TypeError, "MatchTable is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!:MatchTable", names, &PyList_Type,
                                     &lengths, &PyList_Type, &indexes, &PyList_Type, &longer))
        return -1;
    if (table_fill(self, lengths, indexes, longer) < 0) {
        table_clear(self); /* all or nothing: a refused table stays uninitialised */
        return -1;
    }
    return 0;
}

static int
table_fill(Table *self, PyObject *lengths, PyObject *indexes, PyObject *longer)
{
    Py_ssize_t n = PyList_Size(lengths);
    if (PyList_Size(indexes) != n || PyList_Size(longer) != n) {
        PyErr_SetString(PyExc_ValueError, "lengths, indexes and longer differ in length");
        return -1;
    }
    Py_ssize_t n_exts = 0, blob_len = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *items = PyList_GetItem(longer, i);
        if (!PyList_Check(items)) {
            PyErr_SetString(PyExc_TypeError, "longer must hold a list per expression");
            return -1;
        }
        Py_ssize_t count = PyList_Size(items);
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *pair = PyList_GetItem(items, k);
            if (!PyTuple_Check(pair) || PyTuple_Size(pair) != 2 ||
                !PyBytes_Check(PyTuple_GetItem(pair, 0))) {
                PyErr_SetString(PyExc_TypeError, "a longer pattern is a (bytes, int) pair");
                return -1;
            }
            Py_ssize_t len = PyBytes_Size(PyTuple_GetItem(pair, 0));
            if (len > TABLE_MAX - blob_len) {
                PyErr_SetString(PyExc_ValueError, "the longer patterns exceed 4 GiB");
                return -1;
            }
            blob_len += len;
        }
        n_exts += count;
        if (n_exts > TABLE_MAX) {
            PyErr_SetString(PyExc_ValueError, "too many longer patterns");
            return -1;
        }
    }
    if (n > TABLE_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many expressions");
        return -1;
    }
    self->entries = PyMem_Calloc((size_t)n + 1, sizeof(entry));
    self->exts = PyMem_Calloc((size_t)n_exts + 1, sizeof(extension));
    self->blob = PyMem_Malloc((size_t)blob_len + 1);
    self->blob_len = self->blob != NULL ? blob_len : 0;
    if (!self->entries || !self->exts || !self->blob) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t x = 0, offset = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        entry *e = &self->entries[i];
        Py_ssize_t length = PyLong_AsSsize_t(PyList_GetItem(lengths, i));
        if (length == -1 && PyErr_Occurred())
            return -1;
        Py_ssize_t pattern_index = PyLong_AsSsize_t(PyList_GetItem(indexes, i));
        if (pattern_index == -1 && PyErr_Occurred())
            return -1;
        if (length < 1 || pattern_index < 0) {
            PyErr_SetString(PyExc_ValueError, "lengths must be positive, indexes not negative");
            return -1;
        }
        if (length > TABLE_MAX || pattern_index > TABLE_MAX) {
            PyErr_SetString(PyExc_ValueError, "a length or index exceeds 32 bits");
            return -1;
        }
        PyObject *items = PyList_GetItem(longer, i);
        Py_ssize_t ext_count = PyList_Size(items);
        e->length = (uint32_t)length;
        e->index = (uint32_t)pattern_index;
        e->ext_first = (uint32_t)x;
        e->ext_count = (uint32_t)ext_count;
        for (Py_ssize_t k = 0; k < ext_count; k++, x++) {
            PyObject *pair = PyList_GetItem(items, k);
            PyObject *pattern = PyTuple_GetItem(pair, 0);
            Py_ssize_t len = PyBytes_Size(pattern);
            Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GetItem(pair, 1));
            if (index == -1 && PyErr_Occurred())
                return -1;
            if (index < 0 || len <= length) {
                PyErr_SetString(PyExc_ValueError,
                                "a longer pattern must be longer, its index not negative");
                return -1;
            }
            if (index > TABLE_MAX) {
                PyErr_SetString(PyExc_ValueError, "a length or index exceeds 32 bits");
                return -1;
            }
            if (k > 0 && len > (Py_ssize_t)self->exts[x - 1].length) {
                PyErr_SetString(PyExc_ValueError, "longer patterns must come longest first");
                return -1;
            }
            memcpy(self->blob + offset, PyBytes_AsString(pattern), (size_t)len);
            self->exts[x].offset = (uint32_t)offset;
            self->exts[x].length = (uint32_t)len;
            self->exts[x].index = (uint32_t)index;
            offset += len;
        }
    }
    self->n_entries = n;
    self->n_exts = n_exts;
    return 0;
}

static void
table_dealloc(PyObject *self_obj)
{
    PyTypeObject *type = Py_TYPE(self_obj);
    table_clear((Table *)self_obj);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self_obj);
    Py_DECREF(type);
}

PyDoc_STRVAR(table_doc,
"MatchTable(lengths, indexes, longer)\n--\n\n"
"The facts a match needs, by expression number: its pattern's length, the pattern index to\n"
"report, and the longer patterns that start with its bytes as (pattern, index) pairs,\n"
"longest first (HyperscanEngine's roots and longer).");

static PyType_Slot table_slots[] = {
    {Py_tp_doc, (void *)table_doc},
    {Py_tp_init, table_init},
    {Py_tp_dealloc, table_dealloc},
    {Py_tp_new, PyType_GenericNew},
    {0, NULL},
};

static PyType_Spec table_spec = {
    "hardened_launcher.redaction._matches.MatchTable",
    sizeof(Table),
    0,
    Py_TPFLAGS_DEFAULT,
    table_slots,
};

/* ---- MatchSink ---------------------------------------------------------------------------- */

static void
sink_dealloc(PyObject *self_obj)
{
    Sink *self = (Sink *)self_obj;
    PyTypeObject *type = Py_TYPE(self_obj);
    PyMem_Free(self->records);
    PyMem_Free(self->cands);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self_obj);
    Py_DECREF(type);
}

/* The Hyperscan callback: (expression, from, to, flags, context); records (expression, to). */
static PyObject *
sink_call(PyObject *self_obj, PyObject *args, PyObject *kwargs)
{
    Sink *self = (Sink *)self_obj;
    if ((kwargs != NULL && PyDict_Size(kwargs) != 0) || !PyTuple_Check(args) ||
        PyTuple_Size(args) != 5) {
        PyErr_SetString(PyExc_TypeError, "a MatchSink takes (id, from, to, flags, context)");
        return NULL;
    }
    Py_ssize_t expr = PyLong_AsSsize_t(PyTuple_GetItem(args, 0));
    if (expr == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t to = PyLong_AsSsize_t(PyTuple_GetItem(args, 2));
    if (to == -1 && PyErr_Occurred())
        return NULL;
    if (expr < 0 || to < 0) {
        PyErr_SetString(PyExc_ValueError, "a match with a negative expression or end");
        return NULL;
    }
    if (grow((void **)&self->records, &self->cap_records, self->n_records + 1, sizeof(record)) <
        0)
        return NULL;
    self->records[self->n_records].expr = expr;
    self->records[self->n_records].to = to;
    self->n_records++;
    Py_RETURN_NONE;
}

static int
add_candidate(Sink *self, Py_ssize_t start, Py_ssize_t end, Py_ssize_t index)
{
    if (grow((void **)&self->cands, &self->cap_cands, self->n_cands + 1, sizeof(candidate)) < 0)
        return -1;
    candidate *c = &self->cands[self->n_cands];
    c->start = start;
    c->end = end;
    c->index = index;
    c->seq = self->n_cands;
    self->n_cands++;
    return 0;
}

/* The table argument, checked to be a MatchTable that is initialised. */
static const Table *
table_arg(PyObject *sink, PyObject *obj)
{
    PyObject *module = PyType_GetModule(Py_TYPE(sink));
    if (module == NULL)
        return NULL;
    module_state *state = PyModule_GetState(module);
    if (state == NULL)
        return NULL;
    if (!PyObject_TypeCheck(obj, (PyTypeObject *)state->table_type) ||
        ((Table *)obj)->entries == NULL) {
        PyErr_SetString(PyExc_TypeError, "table must be an initialised MatchTable");
        return NULL;
    }
    return (const Table *)obj;
}

/* Whether every record names an expression of t (else an error is set). */
static int
records_known(const Sink *self, const Table *t)
{
    for (Py_ssize_t r = 0; r < self->n_records; r++)
        if (self->records[r].expr >= t->n_entries) {
            PyErr_SetString(PyExc_ValueError, "a match of an expression the table does not know");
            return 0;
        }
    return 1;
}

PyDoc_STRVAR(sink_take_doc,
"take(table, data, /)\n--\n\n"
"Turn the recorded matches of a scan of data (by the database table describes) into\n"
"candidates (start, longest end, pattern) and forget the records\n"
"(HyperscanEngine.all_matches without cuts).");

static PyObject *
sink_take(PyObject *self_obj, PyObject *const *args, Py_ssize_t nargs)
{
    Sink *self = (Sink *)self_obj;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "take() takes exactly 2 arguments");
        return NULL;
    }
    const Table *t = table_arg(self_obj, args[0]);
    if (t == NULL || !records_known(self, t)) {
        self->n_records = 0;
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
        self->n_records = 0;
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    PyObject *out = Py_None;
    for (Py_ssize_t r = 0; r < self->n_records; r++) {
        const entry *e = &t->entries[self->records[r].expr];
        Py_ssize_t to = self->records[r].to;
        if (to > size || to < (Py_ssize_t)e->length) {
            PyErr_SetString(PyExc_ValueError, "a recorded match lies outside the data");
            out = NULL;
            break;
        }
        Py_ssize_t start = to - (Py_ssize_t)e->length, index;
        Py_ssize_t end = extend(t, e, data, start, to, size, &index);
        if (add_candidate(self, start, end, index) < 0) {
            out = NULL;
            break;
        }
    }
    self->n_records = 0;
    PyBuffer_Release(&view);
    Py_XINCREF(out);
    return out;
}

PyDoc_STRVAR(sink_take_joined_doc,
"take_joined(table, text, cuts, seg_j, seg_o, /)\n--\n\n"
"Turn the recorded matches of a scan of a joined text into candidates in the buffer: only\n"
"those inside one window (cuts: the windows' ends in text, the last one len(text)) that\n"
"cross a removed break, mapped back by the segment starts seg_j (in text) and seg_o (in the\n"
"buffer); forget the records (HyperscanEngine.add_joined).");

static PyObject *
sink_take_joined(PyObject *self_obj, PyObject *const *args, Py_ssize_t nargs)
{
    Sink *self = (Sink *)self_obj;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "take_joined() takes exactly 5 arguments");
        return NULL;
    }
    const Table *t = table_arg(self_obj, args[0]);
    if (t == NULL || !records_known(self, t)) {
        self->n_records = 0;
        return NULL;
    }
    Py_ssize_t n_cuts = 0, n_j = 0, n_o = 0;
    Py_ssize_t *cuts = NULL, *seg_j = NULL, *seg_o = NULL;
    PyObject *out = NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
        self->n_records = 0;
        return NULL;
    }
    const unsigned char *text = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    cuts = int_array(args[2], "cuts", &n_cuts, 1);
    if (cuts == NULL)
        goto done;
    seg_j = int_array(args[3], "seg_j", &n_j, 0);
    if (seg_j == NULL)
        goto done;
    seg_o = int_array(args[4], "seg_o", &n_o, 0);
    if (seg_o == NULL)
        goto done;
    if (n_cuts < 1 || cuts[n_cuts - 1] != size || n_j < 1 || n_j != n_o || seg_j[0] != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "cuts must end at the text's end; seg_j and seg_o start the segments");
        goto done;
    }
    for (Py_ssize_t r = 0; r < self->n_records; r++) {
        const entry *e = &t->entries[self->records[r].expr];
        Py_ssize_t to = self->records[r].to;
        if (to > size || to < (Py_ssize_t)e->length) {
            PyErr_SetString(PyExc_ValueError, "a recorded match lies outside the text");
            goto done;
        }
        Py_ssize_t start = to - (Py_ssize_t)e->length;
        Py_ssize_t window = bisect_right(cuts, n_cuts, start);
        if (window >= n_cuts || bisect_right(cuts, n_cuts, to - 1) != window)
            continue; /* across two windows: not an occurrence */
        Py_ssize_t index;
        Py_ssize_t end = extend(t, e, text, start, to, cuts[window], &index);
        Py_ssize_t first = bisect_right(seg_j, n_j, start) - 1;
        Py_ssize_t last = bisect_right(seg_j, n_j, end - 1) - 1;
        if (first == last)
            continue; /* no break inside: the main pass found it */
        Py_ssize_t o_start = seg_o[first] + start - seg_j[first];
        Py_ssize_t o_end = seg_o[last] + end - seg_j[last];
        if (add_candidate(self, o_start, o_end, index) < 0)
            goto done;
    }
    out = Py_None;
    Py_INCREF(out);
done:
    self->n_records = 0;
    PyMem_Free(cuts);
    PyMem_Free(seg_j);
    PyMem_Free(seg_o);
    PyBuffer_Release(&view);
    return out;
}

static int
by_start(const void *a_ptr, const void *b_ptr)
{
    const candidate *a = a_ptr, *b = b_ptr;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end > b->end ? -1 : 1; /* the longest first */
    return a->seq < b->seq ? -1 : (a->seq > b->seq); /* then the first that came */
}

PyDoc_STRVAR(sink_select_doc,
"select()\n--\n\n"
"The leftmost-longest non-overlapping candidates as [(start, end, index)], sorted; the\n"
"candidates are forgotten (engine.greedy_select).");

static PyObject *
sink_select(PyObject *self_obj, PyObject *unused)
{
    (void)unused;
    Sink *self = (Sink *)self_obj;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    if (self->n_cands > 1)
        qsort(self->cands, (size_t)self->n_cands, sizeof(candidate), by_start);
    Py_ssize_t cursor = 0, previous = -1;
    for (Py_ssize_t i = 0; i < self->n_cands; i++) {
        const candidate *c = &self->cands[i];
        if (c->start == previous || c->start < cursor)
            continue; /* a shorter one at the same start, or inside the last choice */
        previous = c->start;
        PyObject *item = Py_BuildValue("(nnn)", c->start, c->end, c->index);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            self->n_cands = 0;
            return NULL;
        }
        Py_DECREF(item);
        cursor = c->end;
    }
    self->n_cands = 0;
    return out;
}

PyDoc_STRVAR(sink_redact_doc,
"redact(data, limit, mask, /)\n--\n\n"
"The choice of select applied to data[:limit]: (output, consumed, indexes). Each chosen match\n"
"starting before limit is replaced by mask (a match may end past limit: consumed is then its\n"
"end), indexes lists the pattern of each mask; the candidates are forgotten\n"
"(stream.redact_buffer).");

static PyObject *
sink_redact(PyObject *self_obj, PyObject *const *args, Py_ssize_t nargs)
{
    Sink *self = (Sink *)self_obj;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "redact() takes exactly 3 arguments");
        self->n_cands = 0;
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) {
        self->n_cands = 0;
        return NULL;
    }
    Py_buffer view, mask_view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        self->n_cands = 0;
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &mask_view, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        self->n_cands = 0;
        return NULL;
    }
    const char *data = (const char *)view.buf;
    Py_ssize_t size = view.len;
    PyObject *out = NULL, *hits = NULL, *text = NULL;
    if (limit < 0 || limit > size) {
        PyErr_SetString(PyExc_ValueError, "limit must lie within the data");
        goto done;
    }
    if (self->n_cands > 1)
        qsort(self->cands, (size_t)self->n_cands, sizeof(candidate), by_start);
    /* The choice, in place: the chosen candidates before limit move to the front. */
    Py_ssize_t chosen = 0, cursor = 0, previous = -1;
    for (Py_ssize_t i = 0; i < self->n_cands; i++) {
        const candidate c = self->cands[i];
        if (c.start == previous || c.start < cursor)
            continue;
        if (c.start >= limit)
            break;
        if (c.end > size) {
            PyErr_SetString(PyExc_ValueError, "a candidate lies outside the data");
            goto done;
        }
        previous = c.start;
        cursor = c.end;
        self->cands[chosen++] = c;
    }
    Py_ssize_t emit_to = cursor > limit ? cursor : limit;
    hits = PyList_New(chosen);
    if (hits == NULL)
        goto done;
    if (chosen == 0 && emit_to == size && PyBytes_CheckExact(args[0])) {
        text = args[0]; /* nothing to mask and nothing held: the data itself */
        Py_INCREF(text);
    } else {
        Py_ssize_t length = emit_to;
        for (Py_ssize_t k = 0; k < chosen; k++)
            length += mask_view.len - (self->cands[k].end - self->cands[k].start);
        text = PyBytes_FromStringAndSize(NULL, length);
        if (text == NULL)
            goto done;
        char *to = PyBytes_AsString(text);
        if (to == NULL)
            goto done;
        Py_ssize_t from = 0;
        for (Py_ssize_t k = 0; k < chosen; k++) {
            const candidate *c = &self->cands[k];
            memcpy(to, data + from, (size_t)(c->start - from));
            to += c->start - from;
            memcpy(to, mask_view.buf, (size_t)mask_view.len);
            to += mask_view.len;
            from = c->end;
            PyObject *index = PyLong_FromSsize_t(c->index);
            if (index == NULL || PyList_SetItem(hits, k, index) < 0)
                goto done;
        }
        memcpy(to, data + from, (size_t)(emit_to - from));
    }
    out = Py_BuildValue("(OnO)", text, emit_to, hits);
done:
    Py_XDECREF(text);
    Py_XDECREF(hits);
    self->n_cands = 0;
    PyBuffer_Release(&mask_view);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef sink_methods[] = {
    {"redact", (PyCFunction)(void (*)(void))sink_redact, METH_FASTCALL, sink_redact_doc},
    {"take", (PyCFunction)(void (*)(void))sink_take, METH_FASTCALL, sink_take_doc},
    {"take_joined", (PyCFunction)(void (*)(void))sink_take_joined, METH_FASTCALL,
     sink_take_joined_doc},
    {"select", sink_select, METH_NOARGS, sink_select_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(sink_doc,
"MatchSink()\n--\n\n"
"The match callback of the Hyperscan scans of one buffer: it records each match; take and\n"
"take_joined turn the records into candidates (by the table of the database scanned),\n"
"select makes the choice over all of them.");

static PyType_Slot sink_slots[] = {
    {Py_tp_doc, (void *)sink_doc},
    {Py_tp_dealloc, sink_dealloc},
    {Py_tp_call, sink_call},
    {Py_tp_methods, sink_methods},
    {Py_tp_new, PyType_GenericNew},
    {0, NULL},
};

static PyType_Spec sink_spec = {
    "hardened_launcher.redaction._matches.MatchSink",
    sizeof(Sink),
    0,
    Py_TPFLAGS_DEFAULT,
    sink_slots,
};

/* ---- module ------------------------------------------------------------------------------- */

static int
matches_exec(PyObject *module)
{
    module_state *state = PyModule_GetState(module);
    if (state == NULL)
        return -1;
    state->table_type = PyType_FromModuleAndSpec(module, &table_spec, NULL);
    if (state->table_type == NULL)
        return -1;
    state->sink_type = PyType_FromModuleAndSpec(module, &sink_spec, NULL);
    if (state->sink_type == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "MatchTable", state->table_type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "MatchSink", state->sink_type);
}

static int
matches_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *state = PyModule_GetState(module);
    if (state != NULL) {
        Py_VISIT(state->table_type);
        Py_VISIT(state->sink_type);
    }
    return 0;
}

static int
matches_clear(PyObject *module)
{
    module_state *state = PyModule_GetState(module);
    if (state != NULL) {
        Py_CLEAR(state->table_type);
        Py_CLEAR(state->sink_type);
    }
    return 0;
}

static void
matches_free(void *module)
{
    matches_clear((PyObject *)module);
}

static PyModuleDef_Slot matches_slots[] = {
    {Py_mod_exec, matches_exec},
    {0, NULL},
};

static struct PyModuleDef matches_module = {
    PyModuleDef_HEAD_INIT,
    "_matches",
    "Match collection and the greedy choice of the Hyperscan engine (see engine.py).",
    sizeof(module_state),
    NULL,
    matches_slots,
    matches_traverse,
    matches_clear,
    matches_free,
};

PyMODINIT_FUNC
PyInit__matches(void)
{
    return PyModuleDef_Init(&matches_module);
}
