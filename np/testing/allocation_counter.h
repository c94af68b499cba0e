// Test-only: linking this library replaces the global operator new/delete with versions that
// count every allocation, so that a test can assert a path allocates nothing:
//
//   const long before = np::testing::AllocationCount();
//   engine->Allowed(a, b, np::Protocol::kTCP, 80);
//   EXPECT_EQ(np::testing::AllocationCount(), before);
//
// Thread safety: the counter is atomic; any thread may allocate and read it.
#ifndef NP_TESTING_ALLOCATION_COUNTER_H_
#define NP_TESTING_ALLOCATION_COUNTER_H_

namespace np::testing {

// Calls of operator new in this process so far.
long AllocationCount();

}  // namespace np::testing

#endif  // NP_TESTING_ALLOCATION_COUNTER_H_
