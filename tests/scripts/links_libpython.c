/* A program that links libpython without ever starting an interpreter (as perf does, for its
 * scripting) and forks: under ffiprof it must behave as untraced (e2e_harm). Given a command, it
 * then runs it (as `perf record -- python3 ...` does) and returns its exit status. */
#include <Python.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
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
    if (argc > 1) {
        fflush(stdout);
        pid_t run = fork();
        if (run == 0) {
            execvp(argv[1], argv + 1);
            _exit(127);
        }
        waitpid(run, &status, 0);
        return WEXITSTATUS(status);
    }
    return 0;
}
