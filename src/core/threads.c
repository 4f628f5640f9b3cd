/* threads.c - the worker pool behind the cpu kernels.
 *
 * A job is a task count and a function; tasks are handed out through an
 * atomic counter, and the calling thread works too.  Between jobs workers
 * spin a little, then sleep on a condition variable. */
#include "core/threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"

struct thread_pool {
    int n;                    /* workers including the caller */
    pthread_t *threads;       /* n - 1 */
    pthread_mutex_t job_lock; /* one job at a time */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t done;
    atomic_ulong generation;  /* bumped when a job is posted */
    atomic_int stop;
    int sleepers;             /* workers waiting on wake (under lock) */
    /* the current job */
    pool_fn fn;
    void *arg;
    int n_tasks;
    atomic_int next;
    atomic_int busy;          /* workers still inside the job */
};

/* Workers and the caller spin a while (SPIN_NS) before they sleep: a
 * decode step posts a job every few tens of microseconds, and waking a
 * sleeping thread costs about as much (more in a virtual machine, where
 * the wake-up is an interrupt to another virtual cpu).  Spinners yield the
 * cpu every SPIN_BATCH pauses, so that a thread they wait for (or any
 * other) gets to run when there are more threads than cores. */
enum { SPIN_NS = 200000, SPIN_BATCH = 64 };

static inline void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One step of a spin: a pause, and every SPIN_BATCH of them a yield; 0
 * once SPIN_NS have passed since the first batch. */
static int spin_more(int *n, long long *deadline)
{
    cpu_pause();
    if (++*n % SPIN_BATCH) return 1;
    long long t = now_ns();
    if (!*deadline)
        *deadline = t + SPIN_NS;
    else if (t > *deadline)
        return 0;
    sched_yield();
    return 1;
}

typedef struct worker_arg {
    thread_pool *pool;
    int index;
} worker_arg;

static void run_tasks(thread_pool *p, int worker)
{
    for (;;) {
        int t = atomic_fetch_add(&p->next, 1);
        if (t >= p->n_tasks) break;
        p->fn(p->arg, t, worker);
    }
}

static void *worker_main(void *v)
{
    worker_arg wa = *(worker_arg *)v;
    free(v);
    thread_pool *p = wa.pool;
    unsigned long seen = 0;
    for (;;) {
        unsigned long g;
        int n = 0;
        long long deadline = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen && spin_more(&n, &deadline)) {
        }
        if (g == seen) {
            pthread_mutex_lock(&p->lock);
            p->sleepers++;
            while (!atomic_load(&p->stop) && (g = atomic_load(&p->generation)) == seen)
                pthread_cond_wait(&p->wake, &p->lock);
            p->sleepers--;
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        run_tasks(p, wa.index);
        if (atomic_fetch_sub(&p->busy, 1) == 1) {
            /* under the lock: the caller may be between its check and its wait */
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
    return NULL;
}

int pool_create(int n_threads, thread_pool **out)
{
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 1024) n_threads = 1024;
    thread_pool *p = calloc(1, sizeof *p);
    if (!p) return infer_err(INFER_ERR_OUT_OF_MEMORY, "thread pool: out of memory");
    p->n = n_threads;
    pthread_mutex_init(&p->job_lock, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        pool_destroy(p);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "thread pool: out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->pool = p;
            wa->index = i;
        }
        if (!wa || pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            p->n = i; /* the workers started so far */
            pool_destroy(p);
            return infer_err(INFER_ERR_BACKEND, "thread pool: cannot start thread %d of %d", i,
                             n_threads);
        }
    }
    *out = p;
    return INFER_OK;
}

void pool_destroy(thread_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i - 1], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->job_lock);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p);
}

int pool_size(const thread_pool *p) { return p ? p->n : 1; }

void pool_run(thread_pool *p, int n_tasks, pool_fn fn, void *arg)
{
    if (n_tasks <= 0) return;
    if (!p || p->n == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    pthread_mutex_lock(&p->job_lock);
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, p->n - 1);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    if (p->sleepers) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    run_tasks(p, 0);
    int n = 0;
    long long deadline = 0;
    while (atomic_load_explicit(&p->busy, memory_order_acquire) > 0 && spin_more(&n, &deadline)) {
    }
    if (atomic_load(&p->busy) > 0) {
        pthread_mutex_lock(&p->lock);
        while (atomic_load(&p->busy) > 0) pthread_cond_wait(&p->done, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->job_lock);
}
