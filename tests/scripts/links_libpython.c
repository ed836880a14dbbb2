/* A program that links libpython without ever starting an interpreter (as perf does, for its
 * scripting) and forks: under ffiprof it must behave as untraced (e2e_harm). */
#include <Python.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    if (Py_IsInitialized()) {
        return 3;
    }
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        printf("child\n");
        fflush(stdout);
        _exit(7);
    }
    int status = 0;
    waitpid(child, &status, 0);
    printf("parent saw %d\n", WEXITSTATUS(status));
    return 0;
}
