/* mpi-hello: a small MPI test program for containerized MPI jobs (examples/mpi-hello.toml).
 *
 * Every rank prints `rank R of N on NODE` (NODE: $BEOWULF_NODE, else MPI_Get_processor_name), then a
 * token goes once around the ring of ranks (each adds its rank) and an MPI_Allreduce sums rank+1.
 * Rank 0 prints `ring ok sum=S` and `allreduce ok sum=S`; a wrong sum is printed as FAILED and the
 * job is aborted with MPI_Abort(..., 3).
 *
 * Test hooks (environment):
 *   MPI_HELLO_FAIL_RANK=R  rank R exits with code 7 right after printing its line.
 *   MPI_HELLO_SLEEP=S      every rank sleeps S seconds after the allreduce.
 *
 * Build: mpicc -O2 -o mpi-hello mpi-hello.c   (scripts/build-mpi-image.sh does it for the image)
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Returns the env var as a non-negative integer, or -1 when it is unset, empty or not a number. */
static long env_number(const char *name)
{
    const char *s = getenv(name);
    char *end;
    long v;
    if (s == NULL || *s == '\0')
        return -1;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < 0)
        return -1;
    return v;
}

int main(int argc, char **argv)
{
    int rank, size, len;
    char processor[MPI_MAX_PROCESSOR_NAME];
    const char *node;
    long fail_rank, sleep_s;
    long long token, want, local, total;
    int failed = 0;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    node = getenv("BEOWULF_NODE");
    if (node == NULL || *node == '\0') {
        MPI_Get_processor_name(processor, &len);
        node = processor;
    }
    printf("rank %d of %d on %s\n", rank, size, node);
    fflush(stdout);

    fail_rank = env_number("MPI_HELLO_FAIL_RANK");
    if (fail_rank == rank) {
        fprintf(stderr, "rank %d: exiting with code 7 (MPI_HELLO_FAIL_RANK)\n", rank);
        fflush(stderr);
        exit(7);
    }

    /* Ring: rank 0 starts the token at 0, every other rank adds its rank and passes it on. */
    want = (long long)size * (size - 1) / 2;
    if (size == 1) {
        token = 0;
    } else if (rank == 0) {
        token = 0;
        MPI_Send(&token, 1, MPI_LONG_LONG, 1, 0, MPI_COMM_WORLD);
        MPI_Recv(&token, 1, MPI_LONG_LONG, size - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {
        MPI_Recv(&token, 1, MPI_LONG_LONG, rank - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        token += rank;
        MPI_Send(&token, 1, MPI_LONG_LONG, (rank + 1) % size, 0, MPI_COMM_WORLD);
    }
    if (rank == 0) {
        if (token == want) {
            printf("ring ok sum=%lld\n", token);
        } else {
            printf("ring FAILED got=%lld want=%lld\n", token, want);
            failed = 1;
        }
        fflush(stdout);
    }

    /* Allreduce: the sum of rank+1 over all ranks is N*(N+1)/2. */
    local = rank + 1;
    MPI_Allreduce(&local, &total, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    want = (long long)size * (size + 1) / 2;
    if (total != want) {
        failed = 1;
        if (rank == 0) {
            printf("allreduce FAILED got=%lld want=%lld\n", total, want);
            fflush(stdout);
        }
    } else if (rank == 0) {
        printf("allreduce ok sum=%lld\n", total);
        fflush(stdout);
    }
    /* Rank 0 alone aborts (it has seen both results): one abort keeps mpirun's report readable. */
    if (failed && rank == 0)
        MPI_Abort(MPI_COMM_WORLD, 3);

    sleep_s = env_number("MPI_HELLO_SLEEP");
    if (sleep_s > 0)
        sleep((unsigned int)sleep_s);

    MPI_Finalize();
    return 0;
}
