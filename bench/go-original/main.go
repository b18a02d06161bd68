// The blog's part-5 accountservice in one file, for side-by-side runs in
// bench/accountservice.sh: the same libraries (gorilla/mux, BoltDB), the same
// seeding and the same handler path (a BoltDB read transaction, json.Unmarshal
// into the model, json.Marshal back out, Content-Length set by hand). The
// original spreads this over main.go, service/ and dbclient/. New here: the
// -port and -db flags, so that a benchmark can pick a free port and a fresh
// database (the original opens ./accounts.db and listens on :6767), and the
// listener is on loopback only, where the benchmark's load goes.
//
// Built in GOPATH mode against Debian's packages, offline:
//   apt-get install golang-go golang-github-gorilla-mux-dev golang-github-boltdb-bolt-dev
//   GO111MODULE=off GOPATH=/usr/share/gocode go build -o accountservice-go bench/go-original/main.go
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"

	"github.com/boltdb/bolt"
	"github.com/gorilla/mux"
)

type Account struct {
	Id   string `json:"id"`
	Name string `json:"name"`
}

type BoltClient struct {
	boltDB *bolt.DB
}

func (bc *BoltClient) OpenBoltDb(path string) {
	var err error
	bc.boltDB, err = bolt.Open(path, 0600, nil)
	if err != nil {
		log.Fatal(err)
	}
}

func (bc *BoltClient) Seed() {
	bc.boltDB.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("AccountBucket"))
		if err != nil {
			return fmt.Errorf("create bucket failed: %s", err)
		}
		return nil
	})
	total := 100
	for i := 0; i < total; i++ {
		key := strconv.Itoa(10000 + i)
		acc := Account{Id: key, Name: "Person_" + strconv.Itoa(i)}
		jsonBytes, _ := json.Marshal(acc)
		bc.boltDB.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("AccountBucket"))
			return b.Put([]byte(key), jsonBytes)
		})
	}
	fmt.Printf("Seeded %v fake accounts...\n", total)
}

func (bc *BoltClient) QueryAccount(accountId string) (Account, error) {
	account := Account{}
	err := bc.boltDB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("AccountBucket"))
		accountBytes := b.Get([]byte(accountId))
		if accountBytes == nil {
			return fmt.Errorf("No account found for " + accountId)
		}
		json.Unmarshal(accountBytes, &account)
		return nil
	})
	return account, err
}

var DBClient *BoltClient

func GetAccount(w http.ResponseWriter, r *http.Request) {
	var accountId = mux.Vars(r)["accountId"]
	account, err := DBClient.QueryAccount(accountId)
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	data, _ := json.Marshal(account)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	w.Write(data)
}

func main() {
	port := flag.String("port", "6767", "port to listen on")
	db := flag.String("db", "accounts.db", "BoltDB file")
	flag.Parse()

	fmt.Printf("Starting %v\n", "accountservice")
	DBClient = &BoltClient{}
	DBClient.OpenBoltDb(*db)
	DBClient.Seed()

	r := mux.NewRouter().StrictSlash(true)
	r.Methods("GET").Path("/accounts/{accountId}").Name("GetAccount").Handler(http.HandlerFunc(GetAccount))
	http.Handle("/", r)
	log.Println("Starting HTTP service at " + *port)
	if err := http.ListenAndServe("127.0.0.1:"+*port, nil); err != nil {
		log.Println("An error occured starting HTTP listener at port " + *port)
		log.Println("Error: " + err.Error())
	}
}
