/* threads.h - a small fixed pool of worker threads for data-parallel loops. */
#ifndef INFER_CORE_THREADS_H
#define INFER_CORE_THREADS_H

typedef struct thread_pool thread_pool;

/* A task function: runs task number `task` on worker `worker`
 * (0 <= worker < pool_size; worker 0 is the calling thread). */
typedef void (*pool_fn)(void *arg, int task, int worker);

/* n_threads <= 0: the number of online processors. */
int pool_create(int n_threads, thread_pool **out);
void pool_destroy(thread_pool *pool);
int pool_size(const thread_pool *pool);

/* Runs fn for every task in [0, n_tasks) and returns when all are done.
 * Jobs from several threads are run one after another. */
void pool_run(thread_pool *pool, int n_tasks, pool_fn fn, void *arg);

#endif
