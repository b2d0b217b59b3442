/* The agent's PMIx server: a thin C layer over OpenPMIx's server library (libpmix2) that builds
 * its info arrays with the library's own macros and turns its callbacks into plain calls the
 * Rust side (computed/src/pmix/mod.rs) handles. Every function here is called from Rust; every
 * callback runs on PMIx's progress thread and must not block. */

#define _GNU_SOURCE
#include <pmix.h>
#include <pmix_server.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Calls into Rust. `done` is handed back exactly once to bw_pmix_fence_done. */
typedef void (*bw_fence_fn)(void *user, const char *nspace, const char *data, size_t ndata,
                            void *done);
typedef void (*bw_abort_fn)(void *user, const char *nspace, uint32_t rank, int status,
                            const char *message);

static bw_fence_fn host_fence;
static bw_abort_fn host_abort;
static void *host_user;

/* A blocking wait for the library's asynchronous registration calls. */
typedef struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int done;
    pmix_status_t status;
} waiter_t;

static void waiter_init(waiter_t *w)
{
    pthread_mutex_init(&w->mutex, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->done = 0;
    w->status = PMIX_SUCCESS;
}

static void waiter_release(pmix_status_t status, void *cbdata)
{
    waiter_t *w = cbdata;
    pthread_mutex_lock(&w->mutex);
    w->status = status;
    w->done = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

static pmix_status_t waiter_wait(waiter_t *w)
{
    pthread_mutex_lock(&w->mutex);
    while (!w->done) {
        pthread_cond_wait(&w->cond, &w->mutex);
    }
    pthread_mutex_unlock(&w->mutex);
    pthread_mutex_destroy(&w->mutex);
    pthread_cond_destroy(&w->cond);
    return w->status;
}

static pmix_status_t client_connected(const pmix_proc_t *proc, void *server_object,
                                      pmix_op_cbfunc_t cbfunc, void *cbdata)
{
    (void) proc, (void) server_object, (void) cbfunc, (void) cbdata;
    return PMIX_OPERATION_SUCCEEDED;
}

static pmix_status_t client_finalized(const pmix_proc_t *proc, void *server_object,
                                      pmix_op_cbfunc_t cbfunc, void *cbdata)
{
    (void) proc, (void) server_object, (void) cbfunc, (void) cbdata;
    return PMIX_OPERATION_SUCCEEDED;
}

/* MPI_Abort: the agent ends the job; the caller is released at once. */
static pmix_status_t abort_fn(const pmix_proc_t *proc, void *server_object, int status,
                              const char msg[], pmix_proc_t procs[], size_t nprocs,
                              pmix_op_cbfunc_t cbfunc, void *cbdata)
{
    (void) server_object, (void) procs, (void) nprocs, (void) cbfunc, (void) cbdata;
    host_abort(host_user, proc->nspace, proc->rank, status, msg ? msg : "");
    return PMIX_OPERATION_SUCCEEDED;
}

typedef struct {
    pmix_modex_cbfunc_t cbfunc;
    void *cbdata;
} fence_done_t;

/* All local ranks reached a fence: the agent gathers every node's contribution and answers
 * through bw_pmix_fence_done. Fences are over the whole job (Open MPI's MPI_Init modex and
 * MPI_Finalize barrier), so the participants need no bookkeeping here. */
static pmix_status_t fence_nb(const pmix_proc_t procs[], size_t nprocs, const pmix_info_t info[],
                              size_t ninfo, char *data, size_t ndata, pmix_modex_cbfunc_t cbfunc,
                              void *cbdata)
{
    (void) nprocs, (void) info, (void) ninfo;
    fence_done_t *done = malloc(sizeof(*done));
    if (NULL == done) {
        return PMIX_ERR_NOMEM;
    }
    done->cbfunc = cbfunc;
    done->cbdata = cbdata;
    host_fence(host_user, procs[0].nspace, data, ndata, done);
    return PMIX_SUCCESS;
}

/* With the full modex at every fence, a rank never needs another node's data on demand. */
static pmix_status_t direct_modex(const pmix_proc_t *proc, const pmix_info_t info[], size_t ninfo,
                                  pmix_modex_cbfunc_t cbfunc, void *cbdata)
{
    (void) proc, (void) info, (void) ninfo, (void) cbfunc, (void) cbdata;
    return PMIX_ERR_NOT_SUPPORTED;
}

static pmix_server_module_t module = {
    .client_connected = client_connected,
    .client_finalized = client_finalized,
    .abort = abort_fn,
    .fence_nb = fence_nb,
    .direct_modex = direct_modex,
};

static void release_copy(void *cbdata)
{
    free(cbdata);
}

void bw_pmix_fence_done(void *handle, int ok, const char *data, size_t ndata)
{
    fence_done_t *done = handle;
    char *copy = NULL;
    if (ok && ndata > 0) {
        copy = malloc(ndata);
        if (NULL == copy) {
            ok = 0;
        } else {
            memcpy(copy, data, ndata);
        }
    }
    if (ok) {
        done->cbfunc(PMIX_SUCCESS, copy, ndata, done->cbdata, release_copy, copy);
    } else {
        done->cbfunc(PMIX_ERROR, NULL, 0, done->cbdata, NULL, NULL);
    }
    free(done);
}

const char *bw_pmix_error(int status)
{
    return PMIx_Error_string(status);
}

int bw_pmix_init(const char *tmpdir, const char *hostname, bw_fence_fn fence, bw_abort_fn abrt,
                 void *user)
{
    host_fence = fence;
    host_abort = abrt;
    host_user = user;
    pmix_info_t info[2];
    PMIX_INFO_LOAD(&info[0], PMIX_SERVER_TMPDIR, tmpdir, PMIX_STRING);
    PMIX_INFO_LOAD(&info[1], PMIX_HOSTNAME, hostname, PMIX_STRING);
    pmix_status_t rc = PMIx_server_init(&module, info, 2);
    PMIX_INFO_DESTRUCT(&info[0]);
    PMIX_INFO_DESTRUCT(&info[1]);
    return rc;
}

/* One job's namespace, as this node sees it.
 * nodes: the job's nodes, comma-separated, in order; ppn: each node's ranks, comma-separated,
 * nodes separated by ';' (PMIx_generate_ppn's input); node_of_rank[r]: index into nodes;
 * local: this node's ranks. */
int bw_pmix_register(const char *nspace, const char *jobid, const char *tmpdir, const char *nodes,
                     const char *ppn, uint32_t node_index, uint32_t nnodes, uint32_t nranks,
                     const char *const *node_names, const uint32_t *node_of_rank,
                     const uint32_t *local, uint32_t nlocal, uint32_t uid, uint32_t gid)
{
    pmix_status_t rc;
    char *node_map = NULL, *proc_map = NULL;
    if (PMIX_SUCCESS != (rc = PMIx_generate_regex(nodes, &node_map))) {
        return rc;
    }
    if (PMIX_SUCCESS != (rc = PMIx_generate_ppn(ppn, &proc_map))) {
        free(node_map);
        return rc;
    }
    void *list = PMIx_Info_list_start();
    bool no = false;
    uint32_t zero = 0;
    PMIx_Info_list_add(list, PMIX_SPAWNED, &no, PMIX_BOOL);
    PMIx_Info_list_add(list, PMIX_JOBID, jobid, PMIX_STRING);
    PMIx_Info_list_add(list, PMIX_NODEID, &node_index, PMIX_UINT32);
    /* The library removes these when the namespace is deregistered: the run's own directory. */
    PMIx_Info_list_add(list, PMIX_TMPDIR, tmpdir, PMIX_STRING);
    PMIx_Info_list_add(list, PMIX_NSDIR, tmpdir, PMIX_STRING);
    PMIx_Info_list_add(list, PMIX_UNIV_SIZE, &nranks, PMIX_UINT32);
    PMIx_Info_list_add(list, PMIX_JOB_SIZE, &nranks, PMIX_UINT32);
    PMIx_Info_list_add(list, PMIX_MAX_PROCS, &nranks, PMIX_UINT32);
    PMIx_Info_list_add(list, PMIX_APP_SIZE, &nranks, PMIX_UINT32);
    PMIx_Info_list_add(list, PMIX_NUM_NODES, &nnodes, PMIX_UINT32);
    PMIx_Info_list_add(list, PMIX_LOCAL_SIZE, &nlocal, PMIX_UINT32);
    PMIx_Info_list_add(list, PMIX_NODE_SIZE, &nlocal, PMIX_UINT32);
    PMIx_Info_list_add(list, PMIX_NODE_MAP, node_map, PMIX_STRING);
    PMIx_Info_list_add(list, PMIX_PROC_MAP, proc_map, PMIX_STRING);
    free(node_map);
    free(proc_map);
    if (nlocal > 0) {
        size_t len = 0;
        char *peers = calloc(nlocal, 11);
        uint32_t leader = local[0];
        for (uint32_t i = 0; i < nlocal; i++) {
            len += sprintf(peers + len, i ? ",%u" : "%u", local[i]);
            if (local[i] < leader) {
                leader = local[i];
            }
        }
        PMIx_Info_list_add(list, PMIX_LOCAL_PEERS, peers, PMIX_STRING);
        PMIx_Info_list_add(list, PMIX_LOCALLDR, &leader, PMIX_PROC_RANK);
        free(peers);
    }
    for (uint32_t rank = 0; rank < nranks; rank++) {
        void *proc = PMIx_Info_list_start();
        PMIx_Info_list_add(proc, PMIX_RANK, &rank, PMIX_PROC_RANK);
        PMIx_Info_list_add(proc, PMIX_APPNUM, &zero, PMIX_UINT32);
        PMIx_Info_list_add(proc, PMIX_APPLDR, &zero, PMIX_PROC_RANK);
        PMIx_Info_list_add(proc, PMIX_GLOBAL_RANK, &rank, PMIX_PROC_RANK);
        PMIx_Info_list_add(proc, PMIX_APP_RANK, &rank, PMIX_PROC_RANK);
        PMIx_Info_list_add(proc, PMIX_HOSTNAME, node_names[node_of_rank[rank]], PMIX_STRING);
        PMIx_Info_list_add(proc, PMIX_NODEID, &node_of_rank[rank], PMIX_UINT32);
        for (uint16_t i = 0; i < nlocal; i++) {
            if (local[i] == rank) {
                PMIx_Info_list_add(proc, PMIX_LOCAL_RANK, &i, PMIX_UINT16);
                PMIx_Info_list_add(proc, PMIX_NODE_RANK, &i, PMIX_UINT16);
            }
        }
        pmix_data_array_t array;
        PMIx_Info_list_convert(proc, &array);
        PMIx_Info_list_release(proc);
        PMIx_Info_list_add(list, PMIX_PROC_DATA, &array, PMIX_DATA_ARRAY);
        PMIX_DATA_ARRAY_DESTRUCT(&array);
    }
    pmix_data_array_t all;
    PMIx_Info_list_convert(list, &all);
    PMIx_Info_list_release(list);

    pmix_nspace_t ns;
    PMIX_LOAD_NSPACE(ns, nspace);
    waiter_t w;
    waiter_init(&w);
    rc = PMIx_server_register_nspace(ns, (int) nlocal, all.array, all.size, waiter_release, &w);
    if (PMIX_SUCCESS == rc) {
        rc = waiter_wait(&w);
    } else if (PMIX_OPERATION_SUCCEEDED == rc) {
        rc = PMIX_SUCCESS;
    }
    PMIX_DATA_ARRAY_DESTRUCT(&all);
    if (PMIX_SUCCESS != rc) {
        return rc;
    }
    for (uint32_t i = 0; i < nlocal; i++) {
        pmix_proc_t proc;
        PMIX_LOAD_PROCID(&proc, nspace, local[i]);
        waiter_init(&w);
        rc = PMIx_server_register_client(&proc, uid, gid, NULL, waiter_release, &w);
        if (PMIX_SUCCESS == rc) {
            rc = waiter_wait(&w);
        }
        if (PMIX_SUCCESS != rc && PMIX_OPERATION_SUCCEEDED != rc) {
            return rc;
        }
    }
    return PMIX_SUCCESS;
}

/* The environment a rank needs to reach this server: appended to `*env` (a NULL-terminated
 * array from malloc the caller frees with bw_pmix_free_env). */
int bw_pmix_fork_env(const char *nspace, uint32_t rank, char ***env)
{
    pmix_proc_t proc;
    PMIX_LOAD_PROCID(&proc, nspace, rank);
    return PMIx_server_setup_fork(&proc, env);
}

void bw_pmix_free_env(char **env)
{
    if (NULL == env) {
        return;
    }
    for (char **e = env; *e; e++) {
        free(*e);
    }
    free(env);
}

void bw_pmix_deregister(const char *nspace)
{
    pmix_nspace_t ns;
    PMIX_LOAD_NSPACE(ns, nspace);
    waiter_t w;
    waiter_init(&w);
    PMIx_server_deregister_nspace(ns, waiter_release, &w);
    waiter_wait(&w);
}
