package idalloc

import "testing"

func TestIDAlloc(t *testing.T) {
	a := New(3)
	var got []uint32
	for range 3 {
		id, ok := a.Get()
		if !ok {
			t.Fatal("alloc failed with ids free")
		}
		got = append(got, id)
	}
	if got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("ids %v, want 1 2 3", got)
	}
	if _, ok := a.Get(); ok {
		t.Fatal("alloc succeeded with every id taken")
	}
	a.Release(2)
	a.Release(1)
	// Round robin: the cursor wrapped past 3 to 1, so the ids come back
	// in cursor order, not most recently released first.
	if id, _ := a.Get(); id != 1 {
		t.Fatalf("after wrap got %d, want 1", id)
	}
	if id, _ := a.Get(); id != 2 {
		t.Fatalf("got %d, want 2", id)
	}

	b := New(10)
	b.Take(7)
	if id, _ := b.Get(); id != 8 {
		t.Fatalf("after take(7) got %d, want 8: ids continue past recovered ones", id)
	}
}
