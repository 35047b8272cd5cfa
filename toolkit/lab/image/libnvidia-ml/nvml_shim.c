/*
 * libnvidia-ml.so.1 of the rigpivot lab's simulated NVIDIA driver.
 *
 * Unmodified pynvml (nvidia-ml-py) loads this library and calls the NVML C API. Answers come
 * from $GPUSIM_ROOT/run/gpusim/nvml.state, re-read on every call (gpusim.py writes it
 * atomically), and from $GPUSIM_ROOT/run/gpusim/apps/<pid> for the processes using the cards.
 * Writes (power limit, persistence mode) run `gpusim.py`, so one program owns the state.
 *
 * Built once per driver version by toolkit/lab/drivers.py:
 *   gcc -shared -fPIC -O2 -fvisibility=hidden -DGPUSIM_DRIVER_VERSION='"535.183.01"'
 *       -DGPUSIM_DRIVER_MAJOR=535 -DGPUSIM_CUDA_VERSION=12020 -Wl,-soname,libnvidia-ml.so.1
 * Struct layouts and version words follow nvml.h as pynvml mirrors them.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef GPUSIM_DRIVER_VERSION
#error "build with -DGPUSIM_DRIVER_VERSION='\"535.183.01\"'"
#endif
#ifndef GPUSIM_DRIVER_MAJOR
#error "build with -DGPUSIM_DRIVER_MAJOR=535"
#endif
#ifndef GPUSIM_CUDA_VERSION
#error "build with -DGPUSIM_CUDA_VERSION=12020"
#endif
/* Entry points NVIDIA added after R470 exist only in the builds of later branches. */
#define GPUSIM_BRANCH_AT_LEAST(b) (GPUSIM_DRIVER_MAJOR >= (b))

#define API __attribute__((visibility("default")))

typedef enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
} nvmlReturn_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
/* NVML's versioned structs carry (version << 24 | sizeof) in their first word. */
#define nvmlMemory_v2 ((unsigned int)(sizeof(nvmlMemory_v2_t) | 2u << 24))

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_v2_t;

#define MAX_GPUS 32
#define MAX_APPS 256
#define MIB (1024ull * 1024ull)
#define NOT_AVAILABLE 0xFFFFFFFFu

/* One card, as gpusim.py renders it. Its operating point is derived from the apps directory. */
struct gpu {
    char name[96], uuid[96], serial[32], bus_id[32], vbios[32];
    unsigned int pci_domain, pci_bus, pci_device, pci_device_id, pci_subsystem_id;
    unsigned long long mem_total, mem_reserved;
    int cc_major, cc_minor;
    unsigned int gen_current, gen_max, gen_gpu_max, gen_host_max, width_current, width_max;
    unsigned int power_default_mw, power_min_mw, power_max_mw, power_limit_mw, persistence;
    /* operating points: [0] idle, [1] a miner on it, [2] another compute process (an
       inference engine); see workload() */
    unsigned int power_mw[3], temp[3], fan[3], util_gpu[3], util_mem[3], clock_sm[3],
        clock_mem[3], pstate[3];
};

struct app {
    unsigned int pid, index;
    unsigned long long used_mib;
    char name[256];
};

/* A device handle is a pointer into this table; its contents are refreshed on every call. */
struct nvmlDevice_st {
    unsigned int index;
};
typedef struct nvmlDevice_st *nvmlDevice_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int init_count;
static struct nvmlDevice_st handles[MAX_GPUS];
static struct gpu gpus[MAX_GPUS];
static unsigned int gpu_count;
static struct app apps[MAX_APPS];
static unsigned int app_count;

static const char *root(void) {
    const char *r = getenv("GPUSIM_ROOT");
    return r ? r : "";
}

static void root_path(char *out, size_t size, const char *path) {
    snprintf(out, size, "%s%s", root(), path);
}

static int read_line(const char *path, char *out, size_t size) {
    char full[4096];
    root_path(full, sizeof full, path);
    FILE *f = fopen(full, "r");
    if (!f)
        return -1;
    if (!fgets(out, (int)size, f))
        out[0] = 0;
    fclose(f);
    out[strcspn(out, "\n")] = 0;
    return 0;
}

static void copy(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src);
}

static unsigned long long num(const char *v) {
    return strtoull(v, NULL, 0);
}

/* Fill one field of gpus[i] from a `key=value` of nvml.state. */
static void set_field(struct gpu *g, const char *key, const char *v) {
    static const struct {
        const char *key;
        size_t offset;
    } uints[] = {
#define U(k, f) {k, offsetof(struct gpu, f)}
        U("pci_domain", pci_domain), U("pci_bus", pci_bus), U("pci_device", pci_device),
        U("pci_device_id", pci_device_id), U("pci_subsystem_id", pci_subsystem_id),
        U("pcie_gen_current", gen_current), U("pcie_gen_max", gen_max),
        U("pcie_gen_gpu_max", gen_gpu_max), U("pcie_gen_host_max", gen_host_max),
        U("pcie_width_current", width_current), U("pcie_width_max", width_max),
        U("power_default_mw", power_default_mw), U("power_min_mw", power_min_mw),
        U("power_max_mw", power_max_mw), U("power_limit_mw", power_limit_mw),
        U("persistence", persistence),
#define P(f, k) U("idle." k, f[0]), U("mining." k, f[1]), U("inference." k, f[2])
        P(power_mw, "power_mw"), P(temp, "temp"), P(fan, "fan"), P(util_gpu, "util_gpu"),
        P(util_mem, "util_mem"), P(clock_sm, "clock_sm"), P(clock_mem, "clock_mem"),
        P(pstate, "pstate"),
#undef P
#undef U
    };
    if (!strcmp(key, "name")) copy(g->name, sizeof g->name, v);
    else if (!strcmp(key, "uuid")) copy(g->uuid, sizeof g->uuid, v);
    else if (!strcmp(key, "serial")) copy(g->serial, sizeof g->serial, v);
    else if (!strcmp(key, "pci_bus_id")) copy(g->bus_id, sizeof g->bus_id, v);
    else if (!strcmp(key, "vbios")) copy(g->vbios, sizeof g->vbios, v);
    else if (!strcmp(key, "mem_total")) g->mem_total = num(v);
    else if (!strcmp(key, "mem_reserved")) g->mem_reserved = num(v);
    else if (!strcmp(key, "cc_major")) g->cc_major = (int)num(v);
    else if (!strcmp(key, "cc_minor")) g->cc_minor = (int)num(v);
    else
        for (size_t i = 0; i < sizeof uints / sizeof uints[0]; i++)
            if (!strcmp(key, uints[i].key))
                *(unsigned int *)((char *)g + uints[i].offset) = (unsigned int)num(v);
}

static int pid_alive(unsigned int pid) {
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* Processes registered in apps/<pid>, skipping dead ones (a crashed miner frees its VRAM). */
static void load_apps(void) {
    char dir_path[4096];
    root_path(dir_path, sizeof dir_path, "/run/gpusim/apps");
    app_count = 0;
    DIR *dir = opendir(dir_path);
    if (!dir)
        return;
    struct dirent *e;
    while ((e = readdir(dir)) && app_count < MAX_APPS) {
        char *end;
        unsigned long pid = strtoul(e->d_name, &end, 10);
        if (*end || end == e->d_name || !pid_alive((unsigned int)pid))
            continue;
        char file[4352], line[512];
        snprintf(file, sizeof file, "%s/%s", dir_path, e->d_name);
        FILE *f = fopen(file, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f) && app_count < MAX_APPS) {
            struct app *a = &apps[app_count];
            int name_at = 0;
            line[strcspn(line, "\n")] = 0;
            if (sscanf(line, "%u %llu %n", &a->index, &a->used_mib, &name_at) == 2 && name_at) {
                a->pid = (unsigned int)pid;
                copy(a->name, sizeof a->name, line + name_at);
                app_count++;
            }
        }
        fclose(f);
    }
    closedir(dir);
}

/* Re-read the driver's view of the cards. Caller holds `lock`. */
static nvmlReturn_t load_state(void) {
    char path[4096], line[512];
    root_path(path, sizeof path, "/run/gpusim/nvml.state");
    FILE *f = fopen(path, "r");
    if (!f)
        return NVML_ERROR_UNKNOWN;
    memset(gpus, 0, sizeof gpus);
    gpu_count = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *eq = strchr(line, '=');
        if (line[0] == '#' || !eq)
            continue;
        *eq = 0;
        char *end;
        unsigned long i = strtoul(line, &end, 10);
        if (!strcmp(line, "count"))
            gpu_count = (unsigned int)num(eq + 1) > MAX_GPUS ? MAX_GPUS : (unsigned int)num(eq + 1);
        else if (end != line && *end == '.' && i < MAX_GPUS)
            set_field(&gpus[i], end + 1, eq + 1);
    }
    fclose(f);
    load_apps();
    return NVML_SUCCESS;
}

/* nvmlInit's checks, as the real library makes them against the kernel module. */
static nvmlReturn_t check_driver(void) {
    char loaded[128];
    if (read_line("/run/gpusim/module-version", loaded, sizeof loaded) != 0)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    if (strcmp(loaded, GPUSIM_DRIVER_VERSION) != 0)
        return NVML_ERROR_LIB_RM_VERSION_MISMATCH;
    return NVML_SUCCESS;
}

/* Every device call: initialised, valid handle, fresh state. Returns with `lock` held on success. */
static nvmlReturn_t enter(nvmlDevice_t device, struct gpu **g) {
    pthread_mutex_lock(&lock);
    nvmlReturn_t r = NVML_SUCCESS;
    if (!init_count)
        r = NVML_ERROR_UNINITIALIZED;
    else if (device < handles || device >= handles + MAX_GPUS)
        r = NVML_ERROR_INVALID_ARGUMENT;
    else if ((r = load_state()) == NVML_SUCCESS && device->index >= gpu_count)
        r = NVML_ERROR_INVALID_ARGUMENT;
    if (r != NVML_SUCCESS) {
        pthread_mutex_unlock(&lock);
        return r;
    }
    if (g)
        *g = &gpus[device->index];
    return NVML_SUCCESS;
}

static nvmlReturn_t leave(nvmlReturn_t r) {
    pthread_mutex_unlock(&lock);
    return r;
}

/* How every device getter begins: enter() (on failure, its error), then the arguments checked
 * (`valid`: the out-pointers given, an argument in range; else INVALID_ARGUMENT, unlocked).
 * Declares `g`, the device's card; the lock is held after it, so the getter ends in leave(). */
#define GET_GPU(valid)                                 \
    struct gpu *g;                                     \
    nvmlReturn_t r = enter(device, &g);                \
    if (r != NVML_SUCCESS)                             \
        return r;                                      \
    if (!(valid))                                      \
        return leave(NVML_ERROR_INVALID_ARGUMENT)

/* A getter of one value: `*out = expr`. */
#define GETTER(fn, type, expr)                               \
    API nvmlReturn_t fn(nvmlDevice_t device, type *out) {    \
        GET_GPU(out);                                        \
        *out = (expr);                                       \
        return leave(NVML_SUCCESS);                          \
    }
#define UINT_GETTER(fn, expr) GETTER(fn, unsigned int, expr)

/* Programs whose compute work is mining (gpusim.py: MINER_PROGRAMS, the same list). */
static const char *const MINER_PROGRAMS[] = {
    "t-rex", "lolminer", "teamredminer", "nbminer", "gminer", "phoenixminer", "ethminer",
    "bzminer", "rigel", "excavator", "onezerominer", "miniz", "xmrig",
};

static int is_miner(const char *name) {
    char prog[256];
    size_t len = strcspn(name, " ");
    const char *base = name;
    for (size_t i = 0; i < len; i++)
        if (name[i] == '/')
            base = name + i + 1;
    size_t n = (size_t)(name + len - base);
    if (n >= sizeof prog)
        return 0;
    for (size_t i = 0; i < n; i++)
        prog[i] = (char)tolower((unsigned char)base[i]);
    prog[n] = 0;
    for (size_t i = 0; i < sizeof MINER_PROGRAMS / sizeof MINER_PROGRAMS[0]; i++)
        if (!strcmp(prog, MINER_PROGRAMS[i]))
            return 1;
    return 0;
}

/* The card's operating point: 0 idle, 1 a miner on it (wins), 2 other compute (inference). */
static int workload(unsigned int index) {
    int point = 0;
    for (unsigned int i = 0; i < app_count; i++)
        if (apps[i].index == index) {
            if (is_miner(apps[i].name))
                return 1;
            point = 2;
        }
    return point;
}

static unsigned long long used_bytes(const struct gpu *g, unsigned int index) {
    unsigned long long used = 0;
    for (unsigned int i = 0; i < app_count; i++)
        if (apps[i].index == index)
            used += apps[i].used_mib * MIB;
    return used > g->mem_total - g->mem_reserved ? g->mem_total - g->mem_reserved : used;
}

static nvmlReturn_t put_string(char *out, unsigned int length, const char *value) {
    if (!out)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

/* Settings go through gpusim.py, the one writer of nvml.state. */
static nvmlReturn_t run_gpusim(const char *cmd, unsigned int index, unsigned int value) {
    char script[4096], idx[16], val[16];
    root_path(script, sizeof script, "/usr/lib/gpusim/gpusim.py");
    snprintf(idx, sizeof idx, "%u", index);
    snprintf(val, sizeof val, "%u", value);
    char *argv[] = {"python3", script, (char *)cmd, idx, val, NULL};
    extern char **environ;
    pid_t pid;
    int status;
    if (posix_spawnp(&pid, "python3", NULL, NULL, argv, environ) != 0)
        return NVML_ERROR_UNKNOWN;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return NVML_ERROR_UNKNOWN;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
}

/* ------------------------------------------------------------------ init and system */

API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&lock);
    nvmlReturn_t r = check_driver();
    if (r == NVML_SUCCESS)
        r = load_state();
    if (r == NVML_SUCCESS) {
        for (unsigned int i = 0; i < MAX_GPUS; i++)
            handles[i].index = i;
        init_count++;
    }
    return leave(r);
}

API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
API nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

API nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&lock);
    if (!init_count)
        return leave(NVML_ERROR_UNINITIALIZED);
    init_count--;
    return leave(NVML_SUCCESS);
}

API const char *nvmlErrorString(nvmlReturn_t result) {
    switch ((int)result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 5: return "Already Initialized";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 8: return "Insufficient External Power";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 11: return "Interrupt Request Issue";
    case 12: return "NVML Shared Library Not Found";
    case 13: return "Function Not Found";
    case 14: return "Corrupted infoROM";
    case 15: return "GPU is lost";
    case 16: return "GPU requires restart";
    case 17: return "The operating system has blocked the request.";
    case 18: return "RM has detected an NVML/RM version mismatch.";
    case 19: return "In use by another client";
    case 20: return "Insufficient Memory";
    case 21: return "No data";
    case 25: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t system_call(void) {
    pthread_mutex_lock(&lock);
    return leave(init_count ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED);
}

API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t r = system_call();
    return r != NVML_SUCCESS ? r : put_string(version, length, GPUSIM_DRIVER_VERSION);
}

/* NVML's own version is the CUDA major followed by the driver version: "12.535.183.01". */
API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    char v[96];
    snprintf(v, sizeof v, "%d.%s", GPUSIM_CUDA_VERSION / 1000, GPUSIM_DRIVER_VERSION);
    return put_string(version, length, v);
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
    if (!cudaDriverVersion)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = GPUSIM_CUDA_VERSION;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) {
    return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

API nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length) {
    pthread_mutex_lock(&lock);
    if (!init_count)
        return leave(NVML_ERROR_UNINITIALIZED);
    load_apps();
    for (unsigned int i = 0; i < app_count; i++)
        if (apps[i].pid == pid)
            return leave(put_string(name, length, apps[i].name));
    return leave(NVML_ERROR_NOT_FOUND);
}

/* ------------------------------------------------------------------ device handles */

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    pthread_mutex_lock(&lock);
    if (!init_count)
        return leave(NVML_ERROR_UNINITIALIZED);
    if (!deviceCount)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    nvmlReturn_t r = load_state();
    if (r == NVML_SUCCESS)
        *deviceCount = gpu_count;
    return leave(r);
}

API nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount) {
    return nvmlDeviceGetCount_v2(deviceCount);
}

API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    unsigned int count;
    nvmlReturn_t r = nvmlDeviceGetCount_v2(&count);
    if (r != NVML_SUCCESS)
        return r;
    if (!device || index >= count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &handles[index];
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

/* The handle of the card `matches` finds `key` on (by UUID, by bus id). */
static nvmlReturn_t find_handle(int (*matches)(const struct gpu *, const char *), const char *key,
                                nvmlDevice_t *device) {
    pthread_mutex_lock(&lock);
    if (!init_count)
        return leave(NVML_ERROR_UNINITIALIZED);
    if (!key || !device)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    nvmlReturn_t r = load_state();
    if (r != NVML_SUCCESS)
        return leave(r);
    for (unsigned int i = 0; i < gpu_count; i++)
        if (matches(&gpus[i], key)) {
            *device = &handles[i];
            return leave(NVML_SUCCESS);
        }
    return leave(NVML_ERROR_NOT_FOUND);
}

static int has_uuid(const struct gpu *g, const char *uuid) { return !strcmp(g->uuid, uuid); }

API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    return find_handle(has_uuid, uuid, device);
}

/* Bus ids come in several spellings ("0000:01:00.0", "00000000:01:00.0", "01:00.0"). */
static int same_bus_id(const char *a, const char *b) {
    unsigned int da = 0, ba, sa, fa, db = 0, bb, sb, fb;
    if (sscanf(a, "%x:%x:%x.%x", &da, &ba, &sa, &fa) != 4 && sscanf(a, "%x:%x.%x", &ba, &sa, &fa) != 3)
        return 0;
    if (sscanf(b, "%x:%x:%x.%x", &db, &bb, &sb, &fb) != 4 && sscanf(b, "%x:%x.%x", &bb, &sb, &fb) != 3)
        return 0;
    return da == db && ba == bb && sa == sb && fa == fb;
}

static int has_bus_id(const struct gpu *g, const char *bus_id) { return same_bus_id(g->bus_id, bus_id); }

API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device) {
    return find_handle(has_bus_id, pciBusId, device);
}

UINT_GETTER(nvmlDeviceGetIndex, device->index)

/* ------------------------------------------------------------------ identity */

#define STRING_GETTER(fn, field)                                                  \
    API nvmlReturn_t fn(nvmlDevice_t device, char *out, unsigned int length) {    \
        struct gpu *g;                                                            \
        nvmlReturn_t r = enter(device, &g);                                       \
        return r != NVML_SUCCESS ? r : leave(put_string(out, length, g->field)); \
    }
STRING_GETTER(nvmlDeviceGetName, name)
STRING_GETTER(nvmlDeviceGetUUID, uuid)
STRING_GETTER(nvmlDeviceGetVbiosVersion, vbios)

/* GeForce boards have no serial in their InfoROM: the state leaves it empty. */
API nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length) {
    struct gpu *g;
    nvmlReturn_t r = enter(device, &g);
    if (r != NVML_SUCCESS)
        return r;
    return leave(g->serial[0] ? put_string(serial, length, g->serial) : NVML_ERROR_NOT_SUPPORTED);
}

API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    GET_GPU(major && minor);
    *major = g->cc_major;
    *minor = g->cc_minor;
    return leave(NVML_SUCCESS);
}

API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    GET_GPU(pci);
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", g->pci_domain,
             g->pci_bus, g->pci_device);
    copy(pci->busId, sizeof pci->busId, g->bus_id);
    pci->domain = g->pci_domain;
    pci->bus = g->pci_bus;
    pci->device = g->pci_device;
    pci->pciDeviceId = g->pci_device_id;
    pci->pciSubSystemId = g->pci_subsystem_id;
    return leave(NVML_SUCCESS);
}

/* ------------------------------------------------------------------ memory */

API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    GET_GPU(memory);
    /* v1 counts the driver's reserved framebuffer as used, like nvidia-smi's memory.used. */
    memory->total = g->mem_total;
    memory->used = g->mem_reserved + used_bytes(g, device->index);
    memory->free = memory->total - memory->used;
    return leave(NVML_SUCCESS);
}

#if GPUSIM_BRANCH_AT_LEAST(510)
API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    GET_GPU(memory);
    if (memory->version != nvmlMemory_v2)
        return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    memory->total = g->mem_total;
    memory->reserved = g->mem_reserved;
    memory->used = used_bytes(g, device->index);
    memory->free = g->mem_total - g->mem_reserved - memory->used;
    return leave(NVML_SUCCESS);
}
#endif

/* ------------------------------------------------------------------ PCIe link */

UINT_GETTER(nvmlDeviceGetCurrPcieLinkGeneration, g->gen_current)
/* "Max" is what this GPU and this host can both do (a Gen4 card on a Gen3 board says 3). */
UINT_GETTER(nvmlDeviceGetMaxPcieLinkGeneration, g->gen_max)
#if GPUSIM_BRANCH_AT_LEAST(510)
UINT_GETTER(nvmlDeviceGetGpuMaxPcieLinkGeneration, g->gen_gpu_max)
#endif
UINT_GETTER(nvmlDeviceGetCurrPcieLinkWidth, g->width_current)
UINT_GETTER(nvmlDeviceGetMaxPcieLinkWidth, g->width_max)

/* ------------------------------------------------------------------ power and thermals */

UINT_GETTER(nvmlDeviceGetPowerManagementLimit, g->power_limit_mw)
UINT_GETTER(nvmlDeviceGetPowerManagementDefaultLimit, g->power_default_mw)
UINT_GETTER(nvmlDeviceGetEnforcedPowerLimit, g->power_limit_mw)
UINT_GETTER(nvmlDeviceGetPowerUsage, g->power_mw[workload(device->index)])
UINT_GETTER(nvmlDeviceGetFanSpeed, g->fan[workload(device->index)])

API nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device,
                                                              unsigned int *minLimit,
                                                              unsigned int *maxLimit) {
    GET_GPU(minLimit && maxLimit);
    *minLimit = g->power_min_mw;
    *maxLimit = g->power_max_mw;
    return leave(NVML_SUCCESS);
}

/* Only the GPU die sensor exists (NVML_TEMPERATURE_GPU = 0). */
API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensorType, unsigned int *temp) {
    GET_GPU(temp && sensorType == 0);
    *temp = g->temp[workload(device->index)];
    return leave(NVML_SUCCESS);
}

UINT_GETTER(nvmlDeviceGetNumFans, 2)

API nvmlReturn_t nvmlDeviceGetFanSpeed_v2(nvmlDevice_t device, unsigned int fan, unsigned int *speed) {
    GET_GPU(speed && fan < 2);
    *speed = g->fan[workload(device->index)];
    return leave(NVML_SUCCESS);
}

API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *util) {
    GET_GPU(util);
    util->gpu = g->util_gpu[workload(device->index)];
    util->memory = g->util_mem[workload(device->index)];
    return leave(NVML_SUCCESS);
}

/* nvmlClockType_t: 0 graphics, 1 SM, 2 memory, 3 video. */
API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    GET_GPU(clock && type >= 0 && type <= 3);
    *clock = type == 2 ? g->clock_mem[workload(device->index)] : g->clock_sm[workload(device->index)];
    return leave(NVML_SUCCESS);
}

GETTER(nvmlDeviceGetPerformanceState, int, (int)g->pstate[workload(device->index)])
GETTER(nvmlDeviceGetPersistenceMode, int, g->persistence ? 1 : 0)

/* Headless rigs: no display attached or initialised on any card. */
GETTER(nvmlDeviceGetDisplayActive, int, 0)

API nvmlReturn_t nvmlDeviceGetDisplayMode(nvmlDevice_t device, int *display) {
    return nvmlDeviceGetDisplayActive(device, display);
}

/* ------------------------------------------------------------------ processes */

/* NVML's two-call protocol: too small a buffer (or none) gets the count and INSUFFICIENT_SIZE. */
static nvmlReturn_t processes(nvmlDevice_t device, unsigned int *count, void *infos, int v2) {
    nvmlReturn_t r = enter(device, NULL);
    if (r != NVML_SUCCESS)
        return r;
    if (!count)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    unsigned int n = 0;
    for (unsigned int i = 0; i < app_count; i++)
        n += apps[i].index == device->index;
    if (*count < n || (n && !infos)) {
        *count = n;
        return leave(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    *count = n;
    for (unsigned int i = 0, k = 0; i < app_count; i++) {
        if (apps[i].index != device->index)
            continue;
        if (v2) {
            nvmlProcessInfo_v2_t *p = (nvmlProcessInfo_v2_t *)infos + k++;
            p->pid = apps[i].pid;
            p->usedGpuMemory = apps[i].used_mib * MIB;
            p->gpuInstanceId = p->computeInstanceId = NOT_AVAILABLE; /* no MIG on GeForce */
        } else {
            nvmlProcessInfo_v1_t *p = (nvmlProcessInfo_v1_t *)infos + k++;
            p->pid = apps[i].pid;
            p->usedGpuMemory = apps[i].used_mib * MIB;
        }
    }
    return leave(NVML_SUCCESS);
}

API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned int *c, void *i) {
    return processes(d, c, i, 0);
}
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *c, void *i) {
    return processes(d, c, i, 1);
}
/* _v3 arrived with R510; pynvml's unversioned call uses it, so on 470 pynvml raises. */
#if GPUSIM_BRANCH_AT_LEAST(510)
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *c, void *i) {
    return processes(d, c, i, 1);
}
#endif

/* ------------------------------------------------------------------ settings (root only) */

API nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t device, unsigned int limit) {
    struct gpu *g;
    nvmlReturn_t r = enter(device, &g);
    if (r != NVML_SUCCESS)
        return r;
    unsigned int lo = g->power_min_mw, hi = g->power_max_mw, index = device->index;
    leave(NVML_SUCCESS);
    if (limit < lo || limit > hi)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (geteuid() != 0)
        return NVML_ERROR_NO_PERMISSION;
    return run_gpusim("set-power", index, limit);
}

API nvmlReturn_t nvmlDeviceSetPersistenceMode(nvmlDevice_t device, int mode) {
    nvmlReturn_t r = enter(device, NULL);
    if (r != NVML_SUCCESS)
        return r;
    unsigned int index = device->index;
    leave(NVML_SUCCESS);
    if (mode != 0 && mode != 1)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (geteuid() != 0)
        return NVML_ERROR_NO_PERMISSION;
    return run_gpusim("set-persistence", index, (unsigned int)mode);
}
