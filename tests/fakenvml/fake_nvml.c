/*
 * A fake libnvidia-ml.so.1 for the tests: the C entry points that pynvml (nvidia-ml-py) calls,
 * with the real structure layouts and return codes, serving GPUs described in a text file.
 *
 * The file is named by $FAKE_NVML_CONFIG and read at every nvmlInit. Lines:
 *
 *   driver <version>
 *   gpu key=value;key=value;...
 *
 * gpu keys: name, uuid, bus (e.g. 00000000:1B:00.0), mem_total, mem_used, mem_reserved (bytes),
 * util_gpu, util_mem (%), temp (C), power_mw, limit_mw (milliwatts), ecc_volatile and
 * ecc_aggregate (uncorrected; corrected counts answer ecc + 1000), mig (0|1),
 * proc=<pid>:<bytes|na> (repeatable), xid=<code> (repeatable: queued XID events),
 * fail=<query>:<nvml error code>[,...] with query one of name uuid pci memory memory_v2 util
 * temp power limit ecc procs mig events handle.
 *
 * Test controls, read or called through ctypes: fake_nvml_init_calls, fake_nvml_shutdown_calls,
 * fake_nvml_handle_calls (counters), fake_nvml_fail_code (when non-zero every entry point
 * answers it: the driver went away), fake_nvml_inject_xid(index, xid).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define MAX_GPUS 16
#define MAX_PROCS 16
#define MAX_XIDS 32
#define EVENT_XID 0x8ULL

enum query { Q_NAME, Q_UUID, Q_PCI, Q_MEMORY, Q_MEMORY_V2, Q_UTIL, Q_TEMP, Q_POWER, Q_LIMIT, Q_ECC,
             Q_PROCS, Q_MIG, Q_EVENTS, Q_HANDLE, Q_COUNT };
static const char *query_names[Q_COUNT] = {"name",  "uuid",  "pci", "memory", "memory_v2",
                                           "util",  "temp",  "power", "limit", "ecc",
                                           "procs", "mig",   "events", "handle"};

struct fake_proc {
    unsigned pid;
    unsigned long long used;
};

struct fake_gpu {
    char name[96];
    char uuid[96];
    char bus[32];
    unsigned long long mem_total, mem_used, mem_reserved;
    unsigned util_gpu, util_mem, temp, power_mw, limit_mw, mig;
    unsigned long long ecc_volatile, ecc_aggregate;
    struct fake_proc procs[MAX_PROCS];
    unsigned nprocs;
    unsigned long long xids[MAX_XIDS];
    unsigned nxids;
    int fail[Q_COUNT];
    void *registered; /* the event set XID events go to, NULL when not registered */
};

typedef struct fake_gpu *nvmlDevice_t;

struct fake_event_set {
    int live;
};
typedef struct fake_event_set *nvmlEventSet_t;

typedef struct {
    char busIdLegacy[16];
    unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
#define nvmlMemory_v2 ((unsigned)(sizeof(nvmlMemory_v2_t) | (2 << 24)))

typedef struct {
    unsigned gpu, memory;
} nvmlUtilization_t;

typedef struct {
    unsigned pid;
    unsigned long long usedGpuMemory;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

int fake_nvml_init_calls = 0;
int fake_nvml_shutdown_calls = 0;
int fake_nvml_handle_calls = 0;
int fake_nvml_fail_code = 0;

static struct fake_gpu gpus[MAX_GPUS];
static unsigned ngpus = 0;
static char driver_version[80] = "0.0";
static int refcount = 0;
static struct fake_event_set event_sets[8];

/* Bounded copy that always terminates (truncating long values). */
static void set_text(char *dst, size_t size, const char *src) {
    size_t n = strlen(src);
    if (n >= size) n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void set_fail(struct fake_gpu *g, char *spec) {
    char *save = NULL;
    for (char *item = strtok_r(spec, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':');
        if (!colon) continue;
        *colon = '\0';
        for (int q = 0; q < Q_COUNT; q++)
            if (strcmp(item, query_names[q]) == 0) g->fail[q] = atoi(colon + 1);
    }
}

static void set_field(struct fake_gpu *g, const char *key, char *value) {
    if (strcmp(key, "name") == 0) set_text(g->name, sizeof g->name, value);
    else if (strcmp(key, "uuid") == 0) set_text(g->uuid, sizeof g->uuid, value);
    else if (strcmp(key, "bus") == 0) set_text(g->bus, sizeof g->bus, value);
    else if (strcmp(key, "mem_total") == 0) g->mem_total = strtoull(value, NULL, 10);
    else if (strcmp(key, "mem_used") == 0) g->mem_used = strtoull(value, NULL, 10);
    else if (strcmp(key, "mem_reserved") == 0) g->mem_reserved = strtoull(value, NULL, 10);
    else if (strcmp(key, "util_gpu") == 0) g->util_gpu = (unsigned)atoi(value);
    else if (strcmp(key, "util_mem") == 0) g->util_mem = (unsigned)atoi(value);
    else if (strcmp(key, "temp") == 0) g->temp = (unsigned)atoi(value);
    else if (strcmp(key, "power_mw") == 0) g->power_mw = (unsigned)strtoul(value, NULL, 10);
    else if (strcmp(key, "limit_mw") == 0) g->limit_mw = (unsigned)strtoul(value, NULL, 10);
    else if (strcmp(key, "ecc_volatile") == 0) g->ecc_volatile = strtoull(value, NULL, 10);
    else if (strcmp(key, "ecc_aggregate") == 0) g->ecc_aggregate = strtoull(value, NULL, 10);
    else if (strcmp(key, "mig") == 0) g->mig = (unsigned)atoi(value);
    else if (strcmp(key, "proc") == 0 && g->nprocs < MAX_PROCS) {
        char *colon = strchr(value, ':');
        struct fake_proc *p = &g->procs[g->nprocs++];
        p->pid = (unsigned)strtoul(value, NULL, 10);
        p->used = (colon && strcmp(colon + 1, "na") != 0) ? strtoull(colon + 1, NULL, 10) : ~0ULL;
    } else if (strcmp(key, "xid") == 0 && g->nxids < MAX_XIDS) {
        g->xids[g->nxids++] = strtoull(value, NULL, 10);
    } else if (strcmp(key, "fail") == 0) {
        set_fail(g, value);
    }
}

static int load_config(void) {
    const char *path = getenv("FAKE_NVML_CONFIG");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return NVML_ERROR_DRIVER_NOT_LOADED;
    char line[4096];
    ngpus = 0;
    memset(gpus, 0, sizeof gpus);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "driver ", 7) == 0) {
            set_text(driver_version, sizeof driver_version, line + 7);
        } else if (strncmp(line, "gpu ", 4) == 0 && ngpus < MAX_GPUS) {
            struct fake_gpu *g = &gpus[ngpus++];
            char *save = NULL;
            for (char *kv = strtok_r(line + 4, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
                char *eq = strchr(kv, '=');
                if (!eq) continue;
                *eq = '\0';
                set_field(g, kv, eq + 1);
            }
        }
    }
    fclose(f);
    return NVML_SUCCESS;
}

/* Common checks at the top of every device query. */
#define GUARD()                                                  \
    do {                                                         \
        if (fake_nvml_fail_code) return fake_nvml_fail_code;     \
        if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;      \
    } while (0)

static int bad_device(nvmlDevice_t d) { return d < gpus || d >= gpus + ngpus; }

#define DEVICE_GUARD(dev, q, out)                                \
    do {                                                         \
        GUARD();                                                 \
        if (bad_device(dev) || !(out)) return NVML_ERROR_INVALID_ARGUMENT; \
        if ((dev)->fail[q]) return (dev)->fail[q];               \
    } while (0)

static nvmlReturn_t copy_string(char *dst, unsigned length, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInitWithFlags(unsigned flags) {
    (void)flags;
    fake_nvml_init_calls++;
    if (fake_nvml_fail_code) return fake_nvml_fail_code;
    int rc = load_config();
    if (rc != NVML_SUCCESS) return rc;
    refcount++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    fake_nvml_shutdown_calls++;
    if (fake_nvml_fail_code) return fake_nvml_fail_code;
    if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    refcount--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned length) {
    GUARD();
    return copy_string(version, length, driver_version);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *count) {
    GUARD();
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = ngpus;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned index, nvmlDevice_t *device) {
    GUARD();
    fake_nvml_handle_calls++;
    if (index >= ngpus || !device) return NVML_ERROR_INVALID_ARGUMENT;
    if (gpus[index].fail[Q_HANDLE]) return gpus[index].fail[Q_HANDLE];
    *device = &gpus[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned length) {
    DEVICE_GUARD(d, Q_NAME, name);
    return copy_string(name, length, d->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned length) {
    DEVICE_GUARD(d, Q_UUID, uuid);
    return copy_string(uuid, length, d->uuid);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    DEVICE_GUARD(d, Q_PCI, pci);
    memset(pci, 0, sizeof *pci);
    set_text(pci->busId, sizeof pci->busId, d->bus);
    set_text(pci->busIdLegacy, sizeof pci->busIdLegacy, d->bus + (strlen(d->bus) > 12 ? 4 : 0));
    unsigned fn = 0;
    sscanf(d->bus, "%x:%x:%x.%x", &pci->domain, &pci->bus, &pci->device, &fn);
    pci->pciDeviceId = 0x233010de;
    return NVML_SUCCESS;
}

/* v1 counts reserved memory as used, as the real library does. */
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *mem) {
    DEVICE_GUARD(d, Q_MEMORY, mem);
    mem->total = d->mem_total;
    mem->used = d->mem_used + d->mem_reserved;
    mem->free = d->mem_total - mem->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *mem) {
    DEVICE_GUARD(d, Q_MEMORY_V2, mem);
    if (mem->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    mem->total = d->mem_total;
    mem->reserved = d->mem_reserved;
    mem->used = d->mem_used;
    mem->free = d->mem_total - d->mem_used - d->mem_reserved;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *util) {
    DEVICE_GUARD(d, Q_UTIL, util);
    util->gpu = d->util_gpu;
    util->memory = d->util_mem;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned *temp) {
    DEVICE_GUARD(d, Q_TEMP, temp);
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT; /* only NVML_TEMPERATURE_GPU exists */
    *temp = d->temp;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned *power) {
    DEVICE_GUARD(d, Q_POWER, power);
    *power = d->power_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned *limit) {
    DEVICE_GUARD(d, Q_LIMIT, limit);
    *limit = d->limit_mw;
    return NVML_SUCCESS;
}

/* error type 1 = uncorrected, 0 = corrected; counter 0 = volatile, 1 = aggregate. */
nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int errorType, int counterType,
                                         unsigned long long *count) {
    DEVICE_GUARD(d, Q_ECC, count);
    if ((errorType != 0 && errorType != 1) || (counterType != 0 && counterType != 1))
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long uncorrected = counterType == 0 ? d->ecc_volatile : d->ecc_aggregate;
    *count = errorType == 1 ? uncorrected : uncorrected + 1000;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned *count,
                                                     nvmlProcessInfo_t *infos) {
    DEVICE_GUARD(d, Q_PROCS, count);
    if (!infos || *count < d->nprocs) {
        *count = d->nprocs;
        return d->nprocs == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned i = 0; i < d->nprocs; i++) {
        infos[i].pid = d->procs[i].pid;
        infos[i].usedGpuMemory = d->procs[i].used;
        infos[i].gpuInstanceId = 0xFFFFFFFFu;
        infos[i].computeInstanceId = 0xFFFFFFFFu;
    }
    *count = d->nprocs;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned *current, unsigned *pending) {
    DEVICE_GUARD(d, Q_MIG, current);
    if (!pending) return NVML_ERROR_INVALID_ARGUMENT;
    *current = d->mig;
    *pending = d->mig;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    GUARD();
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < sizeof event_sets / sizeof event_sets[0]; i++) {
        if (!event_sets[i].live) {
            event_sets[i].live = 1;
            *set = &event_sets[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_UNKNOWN;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    DEVICE_GUARD(d, Q_EVENTS, set);
    if (!set->live) return NVML_ERROR_INVALID_ARGUMENT;
    if (types & ~EVENT_XID) return NVML_ERROR_NOT_SUPPORTED; /* the fake knows XIDs only */
    d->registered = set;
    return NVML_SUCCESS;
}

/* Non-blocking whatever the timeout: the fake's events are all queued already. */
nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned timeoutms) {
    (void)timeoutms;
    GUARD();
    if (!set || !set->live || !data) return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < ngpus; i++) {
        struct fake_gpu *g = &gpus[i];
        if (g->registered != set || g->nxids == 0) continue;
        data->device = g;
        data->eventType = EVENT_XID;
        data->eventData = g->xids[0];
        data->gpuInstanceId = 0xFFFFFFFFu;
        data->computeInstanceId = 0xFFFFFFFFu;
        memmove(g->xids, g->xids + 1, (g->nxids - 1) * sizeof g->xids[0]);
        g->nxids--;
        return NVML_SUCCESS;
    }
    return NVML_ERROR_TIMEOUT;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    if (fake_nvml_fail_code) return fake_nvml_fail_code;
    if (!set || !set->live) return NVML_ERROR_INVALID_ARGUMENT;
    set->live = 0;
    for (unsigned i = 0; i < ngpus; i++)
        if (gpus[i].registered == set) gpus[i].registered = NULL;
    return NVML_SUCCESS;
}

/* Test control: an XID error happens on GPU `index`. */
int fake_nvml_inject_xid(unsigned index, unsigned long long xid) {
    if (index >= ngpus || gpus[index].nxids >= MAX_XIDS) return -1;
    gpus[index].xids[gpus[index].nxids++] = xid;
    return 0;
}
