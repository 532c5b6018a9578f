#include "CVirtioSystem.h"

/* When this thread last gave its executor away, and turns counted since: the admin driver's
 * fairness yield between callers that poll batch after batch (per thread, so that every
 * executor thread gives others a turn, whoever runs on it). */
static __thread unsigned long long turn_stamp;
static __thread unsigned int turn_count;

int csystem_turn_due(unsigned long long now, unsigned long long period, unsigned int turns) {
    turn_count += 1;
    if (now - turn_stamp >= period || now < turn_stamp || turn_count >= turns) {
        turn_stamp = now;
        turn_count = 0;
        return 1;
    }
    return 0;
}
