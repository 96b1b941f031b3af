console.log("hello from node")
